"""Locked package trees for the boot side: the kernel, the initramfs tools.

Both are unpacked the way the rootfs is (no target code runs) into the cache,
keyed by the exact .deb files, and reused by later builds of the same lock.

- The kernel comes from the image's own lock (``kernel: true``); the rootfs
  drops /boot and /lib/modules, and the root output takes the kernel and a
  trimmed module set from this tree instead.
- The initramfs tools (busybox-static, dmsetup) and the boot chain's loader
  packages are locked separately in ``images/<image>-boot.<arch>.lock.json``:
  they never enter the root filesystem.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distbuild import scratch
from distbuild.bootchain import get_chain
from distbuild.context import ArchBuild
from distbuild.core.errors import DistbuildError, LockError
from distbuild.core.run import run, which
from distbuild.model.image import ImageDef
from distbuild.model.recipe import Recipe
from distbuild.rootfs import extract
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import Lock, LockedPackage
from distbuild.rootfs.rootpath import RootDir

INITRAMFS_PACKAGES = ("busybox-static", "dmsetup")


def unpack(
    ctx: ArchBuild,
    label: str,
    packages: list[LockedPackage],
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """A merged-/usr tree with ``packages`` unpacked (then ``finish``ed), cached by their hashes."""
    digest = hashlib.sha256(
        "\n".join(sorted(f"{p.name} {p.sha256}" for p in packages)).encode()
    ).hexdigest()[:32]
    final = ctx.options.cache / "trees" / f"{label}-{ctx.arch.name}-{digest}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch.reap(final.parent, ".tmp-")
    tmp = scratch.make_dir(final.parent, f".{final.name}.tmp-")
    try:
        cache = DebCache(ctx.options.cache)
        cache.ensure(packages, mirror=ctx.options.mirror)
        sub = Lock(ctx.lock.image, ctx.arch.name, ctx.lock.suite, (), tuple(packages))
        extract.populate(tmp, sub, cache, ctx.arch.debian)
        if finish is not None:
            finish(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another build unpacked the same packages first.
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel package: the image, its modules, their index."""

    root: Path
    version: str  # the kernel release, e.g. 6.1.0-56-amd64

    @property
    def modules(self) -> Path:
        return self.root / "usr/lib/modules" / self.version

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"


def kernel_tree(ctx: ArchBuild) -> KernelTree:
    """The image's locked kernel package, unpacked, with a modules.dep from the host's depmod."""
    require_kernel(ctx.image)
    pkgs = [
        p
        for p in ctx.lock.packages
        if p.name.startswith("linux-image-") and p.name != ctx.recipe.kernel_package
    ]
    if not pkgs:
        raise LockError(
            f"the lock of {ctx.image.name} for {ctx.arch.name} has no linux-image package",
            hint=f"run 'distbuild lock --image {ctx.image.name} --arch {ctx.arch.name}'",
        )
    root = unpack(ctx, "kernel", pkgs, lambda tmp: depmod(tmp, _release(tmp)))
    tree = KernelTree(root, _release(root))
    if not tree.image.is_file():
        raise DistbuildError(f"kernel image {tree.image.name} missing from {pkgs[0].name}")
    return tree


def require_kernel(image: ImageDef) -> None:
    if not image.kernel:
        raise DistbuildError(
            f"image {image.name} has no kernel, so it cannot have a root or disk output",
            hint=f"set 'kernel: true' in {image.path.name}, or build only 'oci' for it",
        )


def _release(root: Path) -> str:
    releases = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if p.is_dir())
    if len(releases) != 1:
        raise DistbuildError(f"expected one kernel in {root}, found {releases or 'none'}")
    return releases[0]


def depmod(root: Path, release: str) -> None:
    """Index the modules of a target tree with the host's depmod (it only reads ELF files)."""
    # depmod -b looks in <base>/lib/modules; the tree is merged-/usr.
    if not os.path.lexists(root / "lib"):
        (root / "lib").symlink_to("usr/lib")
    # depmod writes its indexes there following links the host's way: refuse
    # a tree whose links would send them out of it.
    RootDir(root).host_path(f"lib/modules/{release}")
    run(
        [which("depmod", "kmod"), "-b", root, release],
        hint="depmod comes with kmod: apt-get install kmod",
    )


BOOT_LOCK = "-boot"


def boot_packages(recipe: Recipe, image: ImageDef) -> tuple[str, ...]:
    """What the boot lock holds: the initramfs tools, the boot chain's and the boards' loader packages.

    Planned before anything is resolved, so an image without a kernel is
    refused here, before the mirror is asked or a lock is written.
    """
    require_kernel(image)
    # Every board of the arch, built or not: the lock is the same for any --board.
    loaders = [p for board in recipe.boards for p in board.packages]
    return tuple(sorted({*INITRAMFS_PACKAGES, *get_chain(recipe.boot_chain).packages, *loaders}))


def boot_tools(ctx: ArchBuild) -> Path:
    """The initramfs tools and boot loader packages of the boot lock, unpacked for the target arch.

    The plan stage resolved the boot lock with the image's (:func:`boot_packages`);
    this only unpacks what it holds.
    """
    return unpack(ctx, "boot", list(ctx.planned_lock(BOOT_LOCK).packages))
