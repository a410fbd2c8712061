"""What a build is asked to do, and what it holds per arch while it runs.

Below :mod:`distbuild.build` and every output: :class:`BuildOptions` is what
the CLI asked for (frozen), :class:`ArchBuild` one arch's plan (recipe, image,
locks) and what its outputs built so far (the rootfs, the root payload), and
:class:`BuildDir` the staged build the outputs write into. Nothing lives at
module level: two builds in one process share no state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import distbuild
from distbuild.core import ui
from distbuild.core.arch import Arch
from distbuild.core.errors import UsageError
from distbuild.model.board import Board
from distbuild.model.image import ImageDef
from distbuild.model.recipe import Recipe
from distbuild.oci import layout as oci
from distbuild.record import Artifact
from distbuild.rootfs import customise, extensions, extract
from distbuild.rootfs.fetch import DebCache, sha256_file
from distbuild.rootfs.install_updater import UpdaterSetup
from distbuild.rootfs.lock import Lock

# The read-only file systems a root image can be (README: "Root file system").
ROOT_FILESYSTEMS = ("squashfs", "erofs")

T = TypeVar("T")


@dataclass(frozen=True)
class BuildOptions:
    project: Path
    image: str
    arches: tuple[Arch, ...]
    out: Path
    cache: Path
    version: str | None = None
    source_date_epoch: int | None = None
    mirror: str | None = None
    compression_level: int = 6
    update_lock: bool = False
    locked: bool = False  # a missing or stale lock is an error instead of being re-resolved
    updater: UpdaterSetup | None = None  # the channel a node image's updater follows
    allow_outside: tuple[Path, ...] = ()  # paths outside the project definitions may read
    root_fs: str = ROOT_FILESYSTEMS[0]  # the root output's file system
    provision: bytes | None = None  # a checked provisioning file baked into the node's root
    boards: tuple[str, ...] = ("qemu",)  # the boards to make disks for ("all": every board)

    def __post_init__(self) -> None:
        if self.root_fs not in ROOT_FILESYSTEMS:
            raise UsageError(
                f"{self.root_fs!r} is not a root file system distbuild can build",
                hint=f"use one of: {', '.join(ROOT_FILESYSTEMS)}",
            )


@dataclass
class ArchBuild:
    """One arch's build: its plan, and what its outputs have built so far."""

    recipe: Recipe
    image: ImageDef
    lock: Lock
    version: str
    epoch: int
    options: BuildOptions
    workdir: Path
    code: str  # the digest of the code that shapes cached results (code_digest)
    # The other locks the outputs use (the boot lock), by lock name; planned with the image's.
    extra_locks: dict[str, Lock] = field(default_factory=dict)
    _rootfs: Path | None = None
    _built: dict[type, object] = field(default_factory=dict)

    @property
    def arch(self) -> Arch:
        return self.recipe.arch

    @property
    def boards(self) -> tuple[Board, ...]:
        """The boards of this arch to make disks for: those asked for that the arch has."""
        asked = self.options.boards
        if "all" in asked:
            return self.recipe.boards
        return tuple(b for b in self.recipe.boards if b.name in asked)

    def release(self) -> dict[str, str]:
        # EPOCH (SOURCE_DATE_EPOCH) is the node's clock floor at boot.
        return {
            "IMAGE": self.image.name,
            "VERSION": self.version,
            "ARCH": self.arch.name,
            "EPOCH": str(self.epoch),
        }

    def planned_lock(self, suffix: str) -> Lock:
        """A lock the plan stage resolved beside the image's own (``-boot``: the boot lock)."""
        return self.extra_locks[self.image.name + suffix]

    def rootfs(self) -> Path:
        """The customised root tree, built on first use."""
        if self._rootfs is None:
            root = self.workdir / f"rootfs-{self.arch.name}"
            if root.exists():
                shutil.rmtree(root)
            ui.note(f"{self.arch.name}: unpacking {len(self.lock.packages)} packages")
            extract.populate(root, self.lock, DebCache(self.options.cache), self.arch.debian)
            customise.customise(root, self.image, self.release())
            extensions.install(root, self.image, self.options.cache)
            self._rootfs = root
        return self._rootfs

    def once(self, kind: type[T], make: Callable[[], T]) -> T:
        """The ``kind`` this arch's outputs share (the root payload), made on first use."""
        if kind not in self._built:
            self._built[kind] = make()
        made = self._built[kind]
        assert isinstance(made, kind)
        return made

    def cache_key(self, what: str) -> str:
        """A key over every input of the rootfs, so a cached result is reused only when valid."""
        image = dataclasses.asdict(self.image)
        image.pop("path")
        image["overlay"] = _tree_digest(self.image.overlay) if self.image.overlay else None
        inputs = {
            "what": what,
            "lock": self.lock.to_json(),
            "image": repr(image),
            "epoch": self.epoch,
            "release": self.release(),
            "level": self.options.compression_level,
            "code": self.code,
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@dataclass
class BuildDir:
    """The staged build the outputs write into: its directory and its one OCI layout."""

    path: Path
    layout: oci.Layout
    manifests: list[dict[str, Any]] = field(default_factory=list)  # every arch's OCI image

    @classmethod
    def create(cls, path: Path) -> BuildDir:
        return cls(path, oci.Layout(path / "oci").init())

    def artifact(self, arch: str, kind: str, path: Path, board: str | None = None) -> Artifact:
        """The record entry of a file written into the build (for one board, if given)."""
        return Artifact(
            arch,
            kind,
            str(path.relative_to(self.path)),
            sha256_file(path),
            path.stat().st_size,
            board,
        )


def code_digest() -> str:
    """The digest of the code that shapes a rootfs or layer: changing it invalidates caches."""
    pkg = Path(distbuild.__file__).parent
    h = hashlib.sha256()
    shaping = ("rootfs/*.py", "oci/layer.py", "disk/*.py", "core/**/*.py", "context.py")
    for f in sorted(f for pattern in shaping for f in pkg.glob(pattern)):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            h.update(f"{p.relative_to(root)}\0{mode}\0".encode())
            # Only lstat for a FIFO or device: opening one would block (customise refuses it).
            if stat.S_ISLNK(mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(mode):
                h.update(p.read_bytes())
    return h.hexdigest()
