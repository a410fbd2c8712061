"""The build's wiring: one table of outputs, every lock planned up front, state per build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distbuild.build import OUTPUTS, build, lock_requests
from distbuild.context import ROOT_FILESYSTEMS, ArchBuild, BuildOptions
from distbuild.core.arch import get_arch
from distbuild.core.errors import DistbuildError, LockError, UsageError
from distbuild.disk.rootimg import RootPayload, Verity, root_payload
from distbuild.model import image as image_model
from distbuild.model.image import load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs.lock import Lock, lock_path, write_lock
from tests.conftest import REPO, error_and_hint, run_cli


def test_the_outputs_table_is_what_image_definitions_may_list() -> None:
    assert tuple(OUTPUTS) == image_model.OUTPUTS


def test_the_outputs_do_not_import_the_build() -> None:
    """The disk outputs sit below build.py: importing them does not load it (no circle)."""
    code = (
        "import sys, distbuild.disk.outputs, distbuild.disk.trees, distbuild.locks; "
        "sys.exit('distbuild.build' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_the_plan_asks_for_the_boot_lock_only_for_root_and_disk() -> None:
    recipe = load_recipe(REPO, get_arch("amd64"))
    node = load_image(REPO, "node", recipe)
    toolbox = load_image(REPO, "toolbox", recipe)
    wanted = lock_requests(recipe, node)
    assert set(wanted) == {"node", "node-boot"}
    assert {"busybox-static", "dmsetup"} <= set(wanted["node-boot"])
    assert set(lock_requests(recipe, toolbox)) == {"toolbox"}


def _arch_build(workdir: Path) -> ArchBuild:
    recipe = load_recipe(REPO, get_arch("amd64"))
    image = load_image(REPO, "node", recipe)
    opts = BuildOptions(REPO, "node", (recipe.arch,), workdir / "out", workdir / "cache")
    lock = Lock("node", "amd64", recipe.suite, (), ())
    return ArchBuild(recipe, image, lock, "1.0", 0, opts, workdir, code="c0de")


def _payload(version: str) -> RootPayload:
    p = Path("/nonexistent")
    return RootPayload(version, "amd64", "squashfs", p, p, p, Verity("", "", 0), "", 0)


def test_two_builds_in_one_process_share_no_root_payload(tmp_path: Path) -> None:
    """The memo lives on each arch's build: even the same work directory gets its own."""
    first, second = _arch_build(tmp_path), _arch_build(tmp_path)
    made: list[str] = []

    def make(version: str) -> RootPayload:
        made.append(version)
        return _payload(version)

    assert first.once(RootPayload, lambda: make("1")).version == "1"
    assert first.once(RootPayload, lambda: make("again")).version == "1"
    assert second.once(RootPayload, lambda: make("2")).version == "2"
    assert made == ["1", "2"]
    # The root and disk outputs take the payload from their own arch's build.
    assert root_payload(first).version == "1" and root_payload(second).version == "2"


def test_a_locked_build_with_a_stale_boot_lock_stops_at_the_plan(tmp_path: Path) -> None:
    """--locked refuses the stale boot lock before any output (or the build's directory) exists."""
    project = tmp_path / "proj"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, project / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    recipe = load_recipe(project, get_arch("amd64"))
    image = load_image(project, "node", recipe)
    write_lock(
        lock_path(project, "node", "amd64"),
        Lock("node", "amd64", recipe.suite, tuple(sorted(image.packages)), ()),
    )
    boot = lock_path(project, "node-boot", "amd64")
    write_lock(boot, Lock("node-boot", "amd64", recipe.suite, ("busybox-static",), ()))
    before = boot.read_bytes()
    out, cache = tmp_path / "out", tmp_path / "cache"
    opts = BuildOptions(
        project, "node", (recipe.arch,), out, cache, source_date_epoch=0, locked=True
    )
    with pytest.raises(LockError, match=r"node-boot\.amd64\.lock\.json: the lock is stale"):
        build(opts)
    assert boot.read_bytes() == before
    assert list(out.iterdir()) == []  # no image directory, no staging
    assert not any(cache.glob("work-*")) and not (cache / "apt").exists()


def test_an_unknown_root_file_system_is_refused() -> None:
    with pytest.raises(UsageError, match="'ext4' is not a root file system"):
        BuildOptions(REPO, "node", (), Path("out"), Path("cache"), root_fs="ext4")


@pytest.mark.parametrize("fs", ROOT_FILESYSTEMS)
def test_distbuild_root_fs_reaches_the_build_options(
    fs: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the CLI reads DISTBUILD_ROOT_FS; the library gets it as an option."""
    seen: list[BuildOptions] = []

    def record(opts: BuildOptions) -> None:
        seen.append(opts)
        raise DistbuildError("stop here", hint="this test only looks at the options")

    monkeypatch.setattr("distbuild.cli.build.build", record)
    monkeypatch.setenv("DISTBUILD_ROOT_FS", fs)
    args = ["--project", REPO, "image", "--arch", "amd64", "--out", tmp_path / "out"]
    assert run_cli(*args) == 1
    assert [o.root_fs for o in seen] == [fs]
    capsys.readouterr()
    monkeypatch.setenv("DISTBUILD_ROOT_FS", "ext4")
    assert run_cli(*args) == 2
    error, _ = error_and_hint(capsys.readouterr().err)
    assert "--root-fs" in error and "ext4" in error, error
