"""Disk assembly writes into the image's tree, never through its links onto the host.

The root tree is the customised rootfs, links and all. Each case gives the
tree a link to a trap (a tmpfs over a host path in a private mount
namespace) where assembly writes: the updater, kernel modules, depmod's
indexes, byte-compiled Python.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distbuild.core.errors import DistbuildError
from distbuild.disk import trees
from distbuild.disk.modules import ModuleIndex
from distbuild.disk.rootimg import compile_python
from distbuild.rootfs.install_updater import CONFIG, LAUNCHER, TRUST_ANCHOR, install_updater
from distbuild.rootfs.rootpath import RootDir, RootPathError
from tests.support.sandbox import Outcome, run_sandboxed, trap_untouched

pytestmark = pytest.mark.root


@pytest.fixture
def trap() -> Path:
    return Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")


def sandboxed(fn: Callable[[], Any], trap: Path, seeds: dict[str, bytes] | None = None) -> Outcome:
    traps = {trap: seeds or {"victim": b"host file"}}
    out = run_sandboxed(fn, traps=traps, timeout=120)
    assert not out.timed_out
    trap_untouched(out, traps)
    return out


def tree_with_links(tmp_path: Path, trap: Path, *links: str) -> Path:
    tree = tmp_path / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    (tree / "usr/bin").mkdir()
    (tree / "etc").mkdir()
    (tree / "lib").symlink_to("usr/lib")
    for link in links:
        (tree / link).parent.mkdir(parents=True, exist_ok=True)
        (tree / link).symlink_to(str(trap))
    return tree


def test_updater_follows_the_trees_links_inside(tmp_path: Path, trap: Path) -> None:
    tree = tree_with_links(tmp_path, trap, "etc/distbuild", "usr/share/distbuild")
    anchor = b'{"signed": {"_type": "root"}}'

    def install() -> list[str]:
        from distbuild.rootfs import install_updater as updater

        updater.check_trust_anchor = lambda data: None  # the anchor's content is not the point
        return install_updater(tree, channel_url="http://127.0.0.1:1", root_json=anchor)

    out = sandboxed(install, trap)
    assert out.error is None, out.stderr
    inside = tree / str(trap).lstrip("/")
    assert (inside / "update.yaml").read_text().count("channel_url") == 1
    assert (inside / "root.json").read_bytes() == anchor
    assert {CONFIG, TRUST_ANCHOR, LAUNCHER} <= set(out.value)


def test_kernel_modules_are_copied_inside(tmp_path: Path, trap: Path) -> None:
    release = tmp_path / "kernel/usr/lib/modules/6.1.0-test"
    (release / "kernel/fs").mkdir(parents=True)
    (release / "kernel/fs/a.ko").write_bytes(b"\x7fELF a")
    (release / "modules.dep").write_text("kernel/fs/a.ko:\n../../../../../../../../etc/hostname:\n")
    (release / "modules.order").write_text("kernel/fs/a.ko\n")
    tree = tree_with_links(tmp_path, trap, "usr/lib/modules")
    index = ModuleIndex.load(release)

    def copy() -> None:
        index.copy(["kernel/fs/a.ko"], RootDir(tree), "usr/lib/modules/6.1.0-test")

    out = sandboxed(copy, trap)
    assert out.error is None, out.stderr
    inside = tree / str(trap).lstrip("/") / "6.1.0-test"
    assert (inside / "kernel/fs/a.ko").read_bytes() == b"\x7fELF a"
    assert (inside / "modules.order").exists()
    # A modules.dep path out of the release directory is never read.
    with pytest.raises(RootPathError, match="leaves the root"):
        index.copy([next(p for p in index.deps if ".." in p)], RootDir(tree), "x")


def test_depmod_refuses_a_tree_whose_modules_link_out(tmp_path: Path, trap: Path) -> None:
    tree = tree_with_links(tmp_path, trap, "usr/lib/modules")
    (tree / str(trap).lstrip("/") / "6.1.0-test").mkdir(parents=True)  # as the module copy made it

    def depmod() -> None:
        trees.depmod(tree, "6.1.0-test")

    out = sandboxed(depmod, trap, {"6.1.0-test/modules.dep": b"host index"})
    assert isinstance(out.error, RootPathError), out.stderr
    assert "points out of the root" in out.error.message


def test_compileall_never_writes_or_reads_through_links_out(tmp_path: Path, trap: Path) -> None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    tree = tree_with_links(tmp_path, trap)
    lib = tree / "usr/lib" / version
    lib.mkdir()
    (lib / "mine.py").write_text("x = 1\n")
    (lib / "secret.py").symlink_to(f"{trap}/secret.py")
    out = sandboxed(lambda: compile_python(tree), trap, {"secret.py": b"KEY = 'host'\n"})
    assert out.error is None, out.stderr
    pycs = sorted(p.name.split(".")[0] for p in (lib / "__pycache__").iterdir())
    assert pycs == ["mine"]  # the host's secret.py is not compiled into the image

    (tree / "usr/lib/python3/dist-packages").mkdir(parents=True)
    (tree / "usr/lib/python3/dist-packages/__pycache__").symlink_to(str(trap))
    out = sandboxed(lambda: compile_python(tree), trap)
    assert isinstance(out.error, DistbuildError) and "__pycache__" in out.error.message
