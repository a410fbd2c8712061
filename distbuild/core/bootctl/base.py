"""Boot control: which root slot boots next, how many tries it has, which is good.

This module is pure (standard library and ``distbuild.core.errors`` only) because
the node updater imports it and the build copies it into the node image. One
:class:`BootControl` interface, one backend per boot chain (systemd-boot boot
counting for UEFI, a U-Boot environment for armv7); each backend works on a
:class:`BootFiles`: a mounted boot partition on a live node (:class:`DirFiles`)
or the FAT partition inside a disk image edited offline (:class:`ImageFiles`).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import fsync_dir, write_atomic

SLOTS = ("a", "b")


def other(slot: str) -> str:
    """The other slot of an A/B pair."""
    check_slot(slot)
    return "b" if slot == "a" else "a"


def check_slot(slot: str) -> None:
    if slot not in SLOTS:
        raise DistbuildError(f"unknown slot {slot!r}", hint="slots are 'a' and 'b'")


@dataclass(frozen=True)
class SlotState:
    """What the boot chain knows about one slot.

    ``bootable``: the boot loader may pick the slot on its own (it is enabled
    and either good or has tries left). ``tries_left``: boots left while the
    slot is on trial; 0 for a good slot (it needs no tries) and for a slot that
    used them all up or is disabled. ``good``: blessed after a passing health
    check. ``version``: the version installed in the slot, if known.
    """

    slot: str
    bootable: bool
    tries_left: int
    good: bool
    version: str | None


@dataclass(frozen=True)
class SlotBoot:
    """What a slot boots: its kernel, initramfs, command line and device tree.

    ``cmdline`` is the root output's command line *without* ``distbuild.slot=``;
    the backend adds the slot when it installs the files. ``dtb``: the board's
    device tree for this slot's kernel (a release's ``dtb`` target for the
    node's board), or None for a board that needs none (the firmware's own);
    the backend installs it with the kernel and removes a stale one.
    """

    version: str
    kernel: bytes
    initrd: bytes
    cmdline: str
    dtb: bytes | None = None


class BootFiles(Protocol):
    """The files of a boot partition; paths are relative, '/'-separated."""

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        ...

    def write(self, path: str, data: bytes) -> None:
        """Create or replace a file (atomically where the file system allows)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Rename a file, replacing ``dst`` if it exists."""
        ...

    def list(self, directory: str) -> list[str]:
        """The names in a directory (sorted), or [] if it does not exist."""
        ...

    def remove(self, path: str) -> None:
        """Remove a file if it exists."""
        ...


class DirFiles:
    """A mounted boot partition (a live node's ESP or U-Boot boot partition)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, path: str) -> Path:
        rel = Path(path)
        if rel.is_absolute() or ".." in rel.parts:
            raise DistbuildError(f"invalid boot partition path {path!r}")
        return self.root / rel

    def read(self, path: str) -> bytes | None:
        try:
            return self._path(path).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, path: str, data: bytes) -> None:
        write_atomic(self._path(path), data, mode=None)

    def rename(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self._path(src), target)
        fsync_dir(target.parent)

    def list(self, directory: str) -> list[str]:
        try:
            return sorted(p.name for p in self._path(directory).iterdir())
        except FileNotFoundError:
            return []

    def remove(self, path: str) -> None:
        p = self._path(path)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        fsync_dir(p.parent)


class ImageFiles:
    """A FAT partition inside a disk image (or a bare FAT image), edited with mtools.

    ``offset`` is the partition's byte offset in the image (0 for a bare FAT
    image). Nothing is mounted, so this works without root. Used by the build
    and by ``distbuild disk`` on images; never on a node.
    """

    def __init__(self, image: Path, offset: int = 0, epoch: int | None = None) -> None:
        """``epoch``: the time stamped on files and directories (SOURCE_DATE_EPOCH),
        so a build writes the same bytes every time; default: now."""
        self.image = image
        self.offset = offset
        self.epoch = epoch

    @property
    def _drive(self) -> str:
        return f"{self.image}@@{self.offset}"

    def _mtools(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        # Imported here so the node (which never edits images) does not need run.py.
        from distbuild.core.run import run

        env = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
        if self.epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(self.epoch)
        return run(
            [argv[0], "-i", self._drive, *argv[1:]],
            capture=True,
            check=check,
            env=env,
            hint="is the image a disk built by distbuild? (mtools: apt-get install mtools)",
        )

    def read(self, path: str) -> bytes | None:
        proc = self._mtools("mcopy", "-n", f"::/{path}", "-", check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout

    def write(self, path: str, data: bytes) -> None:
        self._mkdirs(path.rsplit("/", 1)[0] if "/" in path else "")
        with tempfile.NamedTemporaryFile(prefix="distbuild-mcopy-") as tmp:
            tmp.write(data)
            tmp.flush()
            self._mtools("mcopy", "-o", "-n", tmp.name, f"::/{path}")

    def rename(self, src: str, dst: str) -> None:
        src_dir, _, _ = src.rpartition("/")
        dst_dir, _, dst_name = dst.rpartition("/")
        if self.read(dst) is not None:
            # mtools will not rename over a file (a leftover of an interrupted rename).
            self._mtools("mdel", f"::/{dst}")
        if src_dir == dst_dir:
            self._mtools("mren", f"::/{src}", dst_name)
        else:
            self._mkdirs(dst_dir)
            self._mtools("mmove", f"::/{src}", f"::/{dst}")

    def list(self, directory: str) -> list[str]:
        proc = self._mtools("mdir", "-b", f"::/{directory}", check=False)
        if proc.returncode != 0:
            return []
        names = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            name = line.rstrip("/").rsplit("/", 1)[-1]
            if name and name not in (".", ".."):
                names.append(name)
        return sorted(names)

    def remove(self, path: str) -> None:
        if self.read(path) is not None:
            self._mtools("mdel", f"::/{path}")

    def _mkdirs(self, directory: str) -> None:
        parts = [p for p in directory.split("/") if p]
        for i in range(len(parts)):
            d = "/".join(parts[: i + 1])
            if self._mtools("mdir", "-b", f"::/{d}", check=False).returncode != 0:
                self._mtools("mmd", f"::/{d}")


def booted_slot(cmdline: str | None = None) -> str | None:
    """The ``distbuild.slot=`` of a kernel command line (default: /proc/cmdline)."""
    if cmdline is None:
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError:
            return None
    for word in cmdline.split():
        if word.startswith("distbuild.slot="):
            slot = word.split("=", 1)[1]
            return slot if slot in SLOTS else None
    return None


class BootControl(ABC):
    """One boot chain's A/B state, read and changed through a :class:`BootFiles`.

    Every change is a small number of renames or whole-file replacements, in an
    order such that a power cut between any two steps leaves a good slot that
    the boot loader picks by itself.
    """

    chain: ClassVar[str]

    def __init__(self, files: BootFiles, cmdline: str | None = None) -> None:
        """``cmdline``: the kernel command line to read the booted slot from;
        default: /proc/cmdline (on a build host it names no slot)."""
        self.files = files
        self.cmdline = cmdline

    def booted(self) -> str | None:
        """The slot the running system booted from (``distbuild.slot=``), None offline."""
        return booted_slot(self.cmdline)

    @abstractmethod
    def states(self) -> dict[str, SlotState]:
        """Both slots' states, keyed by slot name."""

    @abstractmethod
    def boot_order(self) -> list[str]:
        """The slots in the order the boot loader will try them on the next boot.

        Slots the boot loader would not pick by itself (disabled, no tries
        left) are not listed.
        """

    @abstractmethod
    def mark_unbootable(self, slot: str) -> None:
        """Make sure the boot loader never picks ``slot`` (before it is rewritten)."""

    @abstractmethod
    def install(self, slot: str, boot: SlotBoot) -> None:
        """Write ``slot``'s kernel, initramfs, device tree and boot entry; leaves it unbootable.

        The slot is marked unbootable first; call :meth:`set_next` once the
        slot's root partition has been written and verified.
        """

    @abstractmethod
    def set_next(self, slot: str, tries: int = 3) -> None:
        """Boot ``slot`` next, on trial with ``tries`` boots before falling back."""

    @abstractmethod
    def mark_good(self, slot: str) -> None:
        """Bless ``slot``: it stays first and needs no more tries."""


# chain name -> module that defines its backend (imported on first use).
_MODULES = {
    "systemd-boot": "distbuild.core.bootctl.systemd_boot",
    "u-boot": "distbuild.core.bootctl.uboot",
}
BACKENDS: dict[str, type[BootControl]] = {}


def register(cls: type[BootControl]) -> type[BootControl]:
    """Class decorator: make a backend available under its ``chain`` name."""
    BACKENDS[cls.chain] = cls
    return cls


def open_bootctl(chain: str, files: BootFiles, cmdline: str | None = None) -> BootControl:
    """The boot control backend for a boot chain name (a recipe's ``boot.chain``)."""
    if chain not in _MODULES:
        raise DistbuildError(
            f"unknown boot chain {chain!r}",
            hint=f"use one of: {', '.join(sorted(_MODULES))}",
        )
    if chain not in BACKENDS:
        importlib.import_module(_MODULES[chain])
    return BACKENDS[chain](files, cmdline)
