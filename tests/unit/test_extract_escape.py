"""Extraction resolves every member inside the root: a package cannot write on the host."""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

import pytest

from distbuild.core.errors import DistbuildError
from distbuild.rootfs.extract import extract_package
from distbuild.rootfs.rootpath import RootDir
from tests.support.sandbox import run_sandboxed, trap_untouched

pytestmark = pytest.mark.root


def _deb(path: Path, members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A minimal .deb (ar archive) whose data.tar holds ``members`` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            info, data = m if isinstance(m, tuple) else (m, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    ar = b"!<arch>\n"
    for name, data in [("debian-binary", b"2.0\n"), ("data.tar", buf.getvalue())]:
        ar += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        ar += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(ar)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_members_through_package_links_land_inside(tmp_path: Path) -> None:
    trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
    deb = _deb(
        tmp_path / "evil.deb",
        [
            _member("./etc/", tarfile.DIRTYPE),
            _member("./etc/abs", tarfile.SYMTYPE, str(trap)),
            (_member("./etc/abs/planted"), b"abs"),
            _member("./etc/rel", tarfile.SYMTYPE, "../../../../../../../.." + str(trap)),
            (_member("./etc/rel/planted2"), b"rel"),
            _member("./etc/abs/victim", tarfile.SYMTYPE, "/etc/passwd"),
            _member("./etc/hard", tarfile.LNKTYPE, "./etc/abs/planted"),
            _member("./etc/abs/made/", tarfile.DIRTYPE),
        ],
    )
    root = tmp_path / "root"
    root.mkdir()
    seeds = {trap: {"victim": b"host file"}}
    out = run_sandboxed(lambda: extract_package(RootDir(root), deb), traps=seeds)
    assert out.error is None, out.stderr
    trap_untouched(out, seeds)
    inside = root / str(trap).lstrip("/")
    assert (inside / "planted").read_bytes() == b"abs"
    assert (inside / "planted2").read_bytes() == b"rel"
    assert (inside / "victim").is_symlink() and (inside / "made").is_dir()
    assert (root / "etc/hard").stat().st_ino == (inside / "planted").stat().st_ino


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("./../../../../../../../../tmp/x"), "refusing member with '..'"),
        (_member("./etc/h", tarfile.LNKTYPE, "../../../../../../etc/shadow"), "leaves the root"),
        (_member("./etc/h", tarfile.LNKTYPE, "./etc/nothing"), "does not exist"),
    ],
)
def test_hostile_members_are_clean_errors(
    tmp_path: Path, member: tarfile.TarInfo, message: str
) -> None:
    deb = _deb(tmp_path / "evil.deb", [_member("./etc/", tarfile.DIRTYPE), member])
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DistbuildError, match=message):
        extract_package(RootDir(root), deb)
    assert sorted(p.name for p in root.iterdir()) == ["etc"]
