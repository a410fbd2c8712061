"""Every door checks names and numbers: the CLI's flags and the build records it reads.

Each case runs ``distbuild`` in-process (``distbuild.cli.main.main``) and
expects ``error:``/``hint:``, an exit code other than 0 and 70 (a bug), and
nothing written: no directory deleted, no repository or output created.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from distbuild.build import prepare
from distbuild.cli.main import main
from distbuild.context import BuildOptions
from distbuild.core.arch import get_arch
from distbuild.core.errors import UsageError
from distbuild.record import RecordError, load_record
from tests.conftest import error_and_hint
from tests.support.channel import make_build, make_keys

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (and --project): it must stay empty."""
    path = tmp_path / "cwd"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
        code = main([os.fspath(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def refused(result: tuple[int, str, str], *needles: str, code: int | None = None) -> str:
    rc, _, err = result
    assert rc not in (0, 70), err
    if code is not None:
        assert rc == code, err
    error, _ = error_and_hint(err)
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return error


def tree(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its content (files) or link target."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = "-> " + os.readlink(path)
        elif path.is_file():
            out[key] = path.read_bytes()
        else:
            out[key] = "dir"
    return out


# -- --release and other names on the command line -----------------------------------


def test_version_escaping_out_does_not_delete_the_directory(
    run: Run, tmp_path: Path, project: Path
) -> None:
    """Reproduced on main: the build was swapped into the victim and the victim deleted."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    out = tmp_path / "out"
    error = refused(
        run(
            "--project", project, "image", "--arch", "amd64", "--image", "toolbox",
            "--out", out, "--release", f"/../..{victim}", "--source-date-epoch", "0",
        ),
        "--release: invalid version",
        "it holds '/'",
        code=2,
    )  # fmt: skip
    assert str(victim) in error
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert not out.exists()


@pytest.mark.parametrize(
    "version", ["..", "../x", "x/..", ".", "1.0\n", "-1", "a" * 129, "1.0\u2215x", "1..0"]
)
def test_bad_versions_are_refused_before_anything_runs(
    run: Run, tmp_path: Path, project: Path, version: str
) -> None:
    out = tmp_path / "out"
    refused(
        run(
            "--project", project, "image", "--arch", "amd64", "--image", "toolbox",
            "--out", out, "--release", version,
        ),
        "--release: invalid version",
        code=2,
    )  # fmt: skip
    assert not out.exists()


def test_the_build_checks_the_version_too(tmp_path: Path, project: Path) -> None:
    """A library caller (not the CLI) gets the same refusal before any path is formed."""
    opts = BuildOptions(
        project=project,
        image="toolbox",
        arches=(get_arch("amd64"),),
        out=tmp_path / "out",
        cache=tmp_path / "cache",
        version="../../x",
        source_date_epoch=0,
    )
    with pytest.raises(UsageError, match=r"invalid version '\.\./\.\./x'"):
        prepare(opts, get_arch("amd64"), tmp_path / "work")
    with pytest.raises(UsageError, match=r"invalid image name '\.\./images/toolbox'"):
        prepare(
            dataclasses.replace(opts, image="../images/toolbox", version="1"),
            get_arch("amd64"),
            tmp_path / "work",
        )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("image", "--arch", "amd64", "--image", "../../etc/x"), "--image: invalid image name"),
        (("image", "--arch", "amd64,../x"), "--arch: invalid architecture"),
        (("image", "--arch", "amd64", "--channel", "a/b"), "--channel: invalid channel name"),
        (("lock", "--arch", "amd64", "--image", "/abs"), "--image: invalid image name"),
        (("channel", "show", "--repo", ".", "../x"), "NAME: invalid channel name"),
        (("channel", "show", "--repo", ".", "beta", "--arch", ".."), "--arch: invalid"),
        (("channel", "init", "--repo", ".", "--keys", ".", ".."), "NAME: invalid channel name"),
        (("channel", "refresh", "--repo", ".", "--keys", ".", "--channel", "x\n"), "--channel"),
        (("publish", ".", "--channel", "../x", "--repo", ".", "--keys", "."), "--channel"),
        (("promote", "beta", "../x", "--release", "1", "--repo", ".", "--keys", "."), "DEST"),
        (("promote", "a", "b", "--release", "../..", "--repo", ".", "--keys", "."), "--release"),
        (("promote", "a", "b", "--release", "1", "--image", "..", "--repo", ".", "--keys", "."),
         "--image"),
        (("disk", "status", "--arch", "x/y", "/dev/null"), "--arch: invalid architecture"),
    ],
)  # fmt: skip
def test_names_on_the_command_line(run: Run, cwd: Path, args: tuple[str, ...], needle: str) -> None:
    refused(run("--project", cwd, *args), needle, code=2)
    assert list(cwd.iterdir()) == []


def test_a_nul_anywhere_on_the_command_line(run: Run, tmp_path: Path) -> None:
    for args in (
        ("push", f"{tmp_path}/a\0b", "localhost:5000/x/y"),
        ("merge", "--out", f"{tmp_path}/o\0", str(tmp_path)),
        ("--project", "p\0", "recipes", "check"),
        ("serve", "--repo", "\0"),
        ("keys", "init", "--keys", f"{tmp_path}/k\0"),
    ):
        refused(run(*args), "holds a NUL byte", code=2)
    assert list(tmp_path.iterdir()) == []


# -- numbers with ranges ---------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "0", "65536", "000000070000", "1" * 5000])
def test_push_to_a_port_out_of_range(run: Run, tmp_path: Path, port: str) -> None:
    error = refused(
        run("push", make_build(tmp_path, "node", "1.0"), f"localhost:{port}/distbuild/node"),
        "a port is a number from 1 to 65535",
        code=2,
    )
    assert "names port" in error


@pytest.mark.parametrize(
    "args",
    [
        ("image", "--arch", "amd64", "--source-date-epoch", "-1"),
        ("image", "--arch", "amd64", "--source-date-epoch", str(2**32)),
        ("image", "--arch", "amd64", "--source-date-epoch", "1e9"),
        ("keys", "init", "--keys", "k", "--root-keys", "65"),
        ("keys", "init", "--keys", "k", "--targets-keys", "0"),
        ("keys", "init", "--keys", "k", "--threshold", "root=\u00b2"),
        ("keys", "init", "--keys", "k", "--threshold", "root=0"),
        ("keys", "init", "--keys", "k", "--threshold", "root=" + "9" * 5000),
        ("serve", "--repo", ".", "--port", "65536"),
        ("push", ".", "localhost:5000/a/b", "--chunk-size", "9" * 5000),
        ("push", ".", "localhost:5000/a/b", "--chunk-size", "2G"),
        ("push", ".", "localhost:5000/a/b", "--chunk-size", "\u0661\u0660M"),
        ("boot", "/dev/null", "--timeout", "0"),
        ("boot", "/dev/null", "--timeout", "nan"),
        ("boot", "/dev/null", "--timeout", "inf"),
        ("boot", "/dev/null", "--memory", "-1"),
        ("disk", "set-slot", "/dev/null", "--slot", "a", "--tries", "0"),
        ("disk", "set-slot", "/dev/null", "--slot", "a", "--tries", "1000"),
    ],
)
def test_numbers_out_of_range(run: Run, cwd: Path, args: tuple[str, ...]) -> None:
    refused(run("--project", cwd, *args), code=2)
    assert list(cwd.iterdir()) == []


# -- build records are hostile: publish, merge, push, load ---------------------------


def _edit_record(build: Path, change: Callable[[dict[str, object]], None]) -> None:
    path = build / "build.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _artifact(field: str, value: object, kind: str = "root") -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        for a in data["artifacts"]:  # type: ignore[attr-defined]
            if a["kind"] == kind:
                a[field] = value
                return

    return change


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        data[key] = value

    return change


HOSTILE_RECORDS: dict[str, tuple[Callable[[dict[str, object]], None], str]] = {
    "version ../..": (_set("version", "../.."), "invalid version '../..'"),
    "version absolute": (_set("version", "/tmp/x"), "invalid version '/tmp/x'"),
    "version NUL": (_set("version", "1\0"), "invalid version '1\\x00'"),
    "version a number": (_set("version", 1), "invalid version 1"),
    "image ..": (_set("image", ".."), "invalid image name '..'"),
    "path ../../etc/passwd": (
        _artifact("path", "../../etc/passwd"),
        "invalid artifact path '../../etc/passwd': it holds '..'",
    ),
    "path absolute": (_artifact("path", "/etc/passwd"), "it is absolute"),
    "path NUL": (_artifact("path", "amd64/root\0.img"), "it holds a NUL byte"),
    "arch ..": (_artifact("arch", ".."), "invalid architecture '..'"),
    "kind a/b": (_artifact("kind", "a/b"), "invalid artifact kind 'a/b'"),
    "sha256 not hex": (_artifact("sha256", "../x"), "has no valid sha256"),
    "size negative": (_artifact("size", -1), "invalid size -1"),
    "epoch huge": (_set("source_date_epoch", 10**26), "out of range"),
    "oci layout out": (_set("oci", {"layout": "../../..", "index": "sha256:" + "0" * 64}), "'..'"),
    "oci ref ..": (_set("oci", {"layout": "oci", "ref": ".."}), "invalid version '..'"),
}


@pytest.fixture
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    change, needle = HOSTILE_RECORDS[request.param]
    build = make_build(tmp_path / "builds", "node", "1.0")
    _edit_record(build, change)
    return build, needle


def test_a_symlink_out_of_the_build_is_refused(tmp_path: Path) -> None:
    build = make_build(tmp_path / "builds", "node", "1.0")
    (build / "amd64" / "root.img").unlink()
    os.symlink("/etc/passwd", build / "amd64" / "root.img")
    with pytest.raises(RecordError, match="leads out of"):
        load_record(build)


def test_a_good_record_loads(tmp_path: Path) -> None:
    record, directory = load_record(make_build(tmp_path, "node", "1.0"))
    assert (record.image, record.version, directory.name) == ("node", "1.0", "1.0")


@pytest.mark.parametrize("hostile", list(HOSTILE_RECORDS), indirect=True)
@pytest.mark.parametrize("command", ["publish", "merge", "push", "load", "disk write-slot"])
def test_hostile_build_records_are_refused(
    run: Run, tmp_path: Path, project: Path, hostile: tuple[Path, str], command: str
) -> None:
    build, needle = hostile
    keys = make_keys(tmp_path / "keys").path if command == "publish" else tmp_path / "keys"
    repo, out = tmp_path / "area" / "repo", tmp_path / "area" / "out"
    (tmp_path / "area").mkdir()
    disk = tmp_path / "area" / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    before = tree(tmp_path)
    argv = {
        "publish": (
            "publish",
            build,
            "--channel",
            "beta",
            "--repo",
            repo,
            "--keys",
            keys,
            "--allow-root-keys",
        ),
        "merge": ("merge", build, "--out", out),
        "push": ("push", build, "localhost:5000/distbuild/node"),
        "load": ("load", build, "--docker-host", f"unix://{tmp_path}/no.sock"),
        "disk write-slot": ("disk", "write-slot", disk, build, "--arch", "amd64", "--slot", "a"),
    }[command]
    error = refused(run("--project", project, *argv), needle)
    assert "build.json" in error
    assert tree(tmp_path) == before  # nothing written, nothing removed
