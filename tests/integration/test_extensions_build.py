"""``distbuild image`` with an extension served by a loopback HTTP server the test starts:
the file lands in the root with its bytes and mode; a wrong pin or a stalling server
fails the build with ``error:``/``hint:`` and nothing in the output directory."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from distbuild.rootfs import extensions
from tests.conftest import assert_clean_error, error_and_hint, image_args, run_cli
from tests.conftest import distbuild_process as distbuild
from tests.support.disk import nothing_written, project_copy
from tests.support.stall import Stall, raw_trickle, stalling_server

pytestmark = [pytest.mark.slow, pytest.mark.network]

BODY = b"\x7fELF stand-in for a kubelet\n" + bytes(range(256)) * 64
PIN = hashlib.sha256(BODY).hexdigest()
NOBODY = "00" * 32
EXT = """\
include: include/base.yaml
name: ext
outputs: [oci]
packages: [busybox]
extensions:
  /usr/local/bin/kubelet:
    mode: "0750"
    fetch:
      url: {url}
      sha256: {{armv7: "{nobody}", arm64: "{nobody}", amd64: "{pin}"}}
"""


@pytest.fixture
def cache(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache (own extensions and layers) sharing the package downloads."""
    path = tmp_path / "cache"
    path.mkdir()
    for sub in ("debs", "apt"):
        (cache_dir / sub).mkdir(exist_ok=True)
        (path / sub).symlink_to(cache_dir / sub)
    monkeypatch.setenv("DISTBUILD_CACHE", str(path))
    return path


def project(tmp_path: Path, url: str, pin: str = PIN) -> Path:
    proj = project_copy(tmp_path)
    (proj / "images/ext.yaml").write_text(EXT.format(url=url, pin=pin, nobody=NOBODY))
    return proj


def layer_members(out: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    members: dict[str, tuple[tarfile.TarInfo, bytes | None]]
    base = out / "ext/1.0.0"
    record = json.loads((base / "build.json").read_text())
    oci = next(a for a in record["artifacts"] if a["kind"] == "oci")
    manifest = json.loads((base / oci["path"]).read_text())
    blob = base / "oci/blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(blob) as tar:
        members = {m.name: (m, None) for m in tar.getmembers()}
        for name, (m, _) in members.items():
            if m.isreg() and (f := tar.extractfile(m)) is not None:
                members[name] = (m, f.read())
    return members


def test_the_fetched_file_lands_with_its_bytes_and_mode(tmp_path: Path, cache: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "kubelet-x86_64").write_bytes(BODY)
    with stalling_server(www, Stall()) as base:
        proj = project(tmp_path, base + "/kubelet-{{ arch.uname }}")
        assert run_cli(*image_args(proj, tmp_path / "one", "ext", "amd64")) == 0
    member, data = layer_members(tmp_path / "one")["usr/local/bin/kubelet"]
    assert data == BODY and member.mode == 0o750 and member.isreg()
    assert (cache / "extensions" / PIN).read_bytes() == BODY
    # The SBOM names the file, its pin and where it came from; it still validates.
    sbom = parse_file(str(tmp_path / "one/ext/1.0.0/amd64/sbom.spdx.json"))
    assert validate_full_spdx_document(sbom) == []
    (pkg,) = [p for p in sbom.packages if p.name == "/usr/local/bin/kubelet"]
    assert [c.value for c in pkg.checksums] == [PIN] and base in (pkg.source_info or "")

    # The server is gone: a second build (the layer cache emptied too) needs no network.
    for entry in (cache / "layers").iterdir():
        entry.rename(tmp_path / f"old-{entry.name}")
    assert run_cli(*image_args(proj, tmp_path / "two", "ext", "amd64")) == 0
    assert layer_members(tmp_path / "two")["usr/local/bin/kubelet"][1] == BODY

    # Another pin is another build: the layer cache does not hand back the old file.
    (www / "kubelet-2").write_bytes(BODY + b"v2")
    with stalling_server(www, Stall()) as base:
        proj = project(
            tmp_path / "v2", base + "/kubelet-2", hashlib.sha256(BODY + b"v2").hexdigest()
        )
        assert run_cli(*image_args(proj, tmp_path / "three", "ext", "amd64")) == 0
    assert layer_members(tmp_path / "three")["usr/local/bin/kubelet"][1] == BODY + b"v2"


def test_a_wrong_sha256_fails_before_anything_is_written(tmp_path: Path, cache: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "kubelet").write_bytes(BODY + b"tampered")
    out = tmp_path / "out"
    with stalling_server(www, Stall()) as base:
        proj = project(tmp_path, base + "/kubelet")
        proc = distbuild(
            *image_args(proj, out, "ext", "amd64"), env={"DISTBUILD_CACHE": str(cache)}
        )
    err = assert_clean_error(proc, "sha256 mismatch", PIN, "ext.yaml:", "extensions.")
    assert "Traceback" not in err and proc.returncode == 5, err
    assert nothing_written(out)
    assert list((cache / "extensions").iterdir()) == []


def test_a_stalling_server_meets_the_deadline(
    tmp_path: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(extensions, "DEADLINE", 1.0)
    out = tmp_path / "out"
    with raw_trickle(0.5) as host:
        proj = project(tmp_path, f"http://{host}/kubelet")
        assert run_cli(*image_args(proj, out, "ext", "amd64")) == 5
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "no complete answer within 1 s" in error and "/usr/local/bin/kubelet" in error
    assert "network" in hint
    assert nothing_written(out)
    assert not [p for p in (cache / "extensions").iterdir() if not os.path.isdir(p)]
