"""Every lock an image uses is planned up front: --locked covers the boot lock,
'distbuild lock' writes it, and the epoch's source does not change a byte."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from distbuild.build import plan_locks
from distbuild.context import BuildOptions
from distbuild.core.arch import parse_arches
from distbuild.model.image import load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs.lock import Lock, lock_path, read_lock, write_lock
from tests.conftest import EPOCH, REPO, Builder, error_and_hint, run_cli


def closed_port_url() -> str:
    """A loopback URL nothing listens on: any request to it fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/debian"


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project copy without locks, and an empty cache (so nothing is cached to resolve from)."""
    dest = tmp_path / "proj"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    monkeypatch.setenv("DISTBUILD_CACHE", str(tmp_path / "cache"))
    return dest


def image_lock_only(project: Path, arch: str = "amd64", name: str = "node") -> None:
    """An image lock that covers the image (no packages: the build stops before them)."""
    recipe = load_recipe(project, parse_arches([arch])[0])
    image = load_image(project, name, recipe)
    lock = Lock(name, arch, recipe.suite, tuple(sorted(image.packages)), ())
    write_lock(lock_path(project, name, arch), lock)


def node_locked(project: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--project",
        str(project),
        "image",
        "--arch",
        "amd64",
        "--image",
        "node",
        "--out",
        str(out),
        "--mirror",
        closed_port_url(),
        *extra,
    ]


def test_locked_refuses_a_missing_boot_lock_offline(
    fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_lock_only(fresh)
    rc = run_cli(*node_locked(fresh, tmp_path / "out", "--locked"))
    error, hint = error_and_hint(capsys.readouterr().err)
    assert rc == 6, error  # LockError, not a failed fetch from the closed port
    assert "node-boot.amd64.lock.json" in error and "no lock file (--locked)" in error, error
    assert "distbuild lock --image node --arch amd64" in hint
    assert not (fresh / "images/node-boot.amd64.lock.json").exists()
    assert not (tmp_path / "cache/apt").exists()  # nothing was resolved
    assert not (tmp_path / "out/node").exists()


def test_locked_refuses_a_stale_boot_lock(
    fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_lock_only(fresh)
    boot = lock_path(fresh, "node-boot", "amd64")
    suite = read_lock(lock_path(fresh, "node", "amd64")).suite
    write_lock(boot, Lock("node-boot", "amd64", suite, ("busybox-static",), ()))
    before = boot.read_bytes()
    rc = run_cli(*node_locked(fresh, tmp_path / "out", "--locked"))
    error, _ = error_and_hint(capsys.readouterr().err)
    assert rc == 6 and "node-boot.amd64.lock.json" in error and "stale" in error, error
    assert boot.read_bytes() == before
    assert not (tmp_path / "out/node").exists()  # refused at the plan, before any output


def test_locked_and_update_lock_contradict(
    fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_lock_only(fresh)
    rc = run_cli(*node_locked(fresh, tmp_path / "out", "--locked", "--update-lock"))
    error, _ = error_and_hint(capsys.readouterr().err)
    assert rc == 2 and "contradict" in error, error


def test_root_output_without_a_kernel_is_refused_before_resolving(
    fresh: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toolbox = fresh / "images/toolbox.yaml"
    toolbox.write_text(toolbox.read_text().replace("outputs: [oci]", "outputs: [oci, root]"))
    image_lock_only(fresh, name="toolbox")
    args = node_locked(fresh, tmp_path / "out")
    args[args.index("node")] = "toolbox"
    assert run_cli(*args) not in (0, 70)
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "image toolbox has no kernel" in error and "kernel: true" in hint
    assert not lock_path(fresh, "toolbox-boot", "amd64").exists()
    assert not (tmp_path / "cache/apt").exists()


@pytest.mark.slow
@pytest.mark.network
def test_lock_command_writes_every_lock(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--project", fresh, "lock", "--image", "node", "--arch", "amd64") == 0
    printed = capsys.readouterr().out
    image, boot = lock_path(fresh, "node", "amd64"), lock_path(fresh, "node-boot", "amd64")
    assert str(image) in printed and str(boot) in printed
    assert {"busybox-static", "dmsetup", "systemd-boot-efi"} <= set(read_lock(boot).requested)
    assert "linux-image-amd64" in read_lock(image).requested
    # Both locks now cover the image: a --locked plan needs no mirror at all.
    arch = parse_arches(["amd64"])[0]
    recipe = load_recipe(fresh, arch)
    opts = BuildOptions(
        project=fresh,
        image="node",
        arches=(arch,),
        out=fresh / "out",
        cache=fresh / "no-cache",
        mirror=closed_port_url(),
        locked=True,
    )
    locks = plan_locks(opts, recipe, load_image(fresh, "node", recipe))
    assert locks == {"node": read_lock(image), "node-boot": read_lock(boot)}


def _build_json(directory: Path) -> dict[str, object]:
    return dict(json.loads((directory / "build.json").read_text()))


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("image", ["toolbox", "node"])
def test_epoch_from_environment_equals_flag(
    image: str,
    build_image: Builder,
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The build workflow exports SOURCE_DATE_EPOCH; the suite passes the flag."""
    with_flag = build_image(image, "amd64")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    out = tmp_path / "out"
    args = ["--project", project, "image", "--arch", "amd64", "--image", image]
    assert run_cli(*args, "--out", out, "--release", "1.0.0", "--locked") == 0
    from_env = out / image / "1.0.0"
    record = _build_json(from_env)
    assert record == _build_json(with_flag)
    kinds = {a["kind"] for a in record["artifacts"]}  # type: ignore[attr-defined]
    expected = {"oci", "oci-index", "sbom", "lock"}
    if image == "node":
        expected |= {"root", "kernel", "initrd", "boot", "disk", "disk-bmap"}
    assert expected <= kinds
    assert (from_env / "build.json").read_bytes() == (with_flag / "build.json").read_bytes()
