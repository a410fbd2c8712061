"""The card ``distbuild flash`` writes: which block device it is, and whether it may be written.

A block device is refused while it, or any of its partitions, is mounted,
used as swap or held by device-mapper (matched exactly by device number, so
``/dev/sda`` is not refused for ``/dev/sdaa1``), when it is smaller than the
image, and, unless forced, while it holds partitions or a partition table:
that is somebody's data. It is then opened with ``O_EXCL``, so the kernel
refuses it too if anything claims it meanwhile.

A regular file (or a path that does not exist yet) is a target too: that is
how images are copied and how the tests work. It is written as a new file
beside the old one and renamed over it once verified, so it is never left
half-written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distbuild.core.errors import UsageError
from distbuild.node import gpt

BLKRRPART = 0x125F  # linux/fs.h: re-read the partition table
_SYS_BLOCK = Path("/sys/dev/block")
_IN_USE_HINT = (
    "unmount every partition of the card first (umount /dev/sdX*), or pick another device"
)


class DeviceError(UsageError):
    """A target ``distbuild flash`` will not write."""


@dataclass(frozen=True)
class Device:
    """A block device as sysfs sees it: its node, name, number and partitions."""

    path: Path
    name: str
    rdev: int
    partitions: tuple[tuple[str, int], ...]  # (name, device number)

    @property
    def numbers(self) -> set[int]:
        return {self.rdev} | {n for _, n in self.partitions}

    @property
    def nodes(self) -> set[str]:
        return {f"/dev/{self.name}"} | {f"/dev/{p}" for p, _ in self.partitions}


def _devnum(text: str) -> int:
    major, minor = text.strip().split(":")
    return os.makedev(int(major), int(minor))


def inspect(path: Path, rdev: int) -> Device:
    """The device with number ``rdev``, its partitions read from /sys/dev/block."""
    sys_dir = (_SYS_BLOCK / f"{os.major(rdev)}:{os.minor(rdev)}").resolve()
    if (sys_dir / "partition").exists():
        raise DeviceError(
            f"{path} is a partition ({sys_dir.name}), not a whole card",
            hint=f"name the whole device, e.g. /dev/{sys_dir.parent.name}",
        )
    parts = tuple(
        sorted(
            (d.name, _devnum((d / "dev").read_text()))
            for d in sys_dir.iterdir()
            if (d / "partition").is_file()
        )
    )
    return Device(path, sys_dir.name, rdev, parts)


def _mounts(device: Device) -> Iterator[str]:
    """What of ``device`` is mounted: by device number, or by source path (btrfs and
    the like report an anonymous number)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            source = line.split(" - ", 1)[1].split()
            node = os.path.realpath(source[1]) if len(source) > 1 else ""
            if _devnum(fields[2]) in device.numbers or node in device.nodes:
                yield f"{source[1] if len(source) > 1 else fields[2]} on {fields[4]}"


def _swaps(device: Device) -> Iterator[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except FileNotFoundError:  # a kernel without swap
        return
    for line in lines:
        name = line.split()[0] if line.split() else ""
        if os.path.realpath(name) in device.nodes:
            yield f"{name} as swap"


def _holders(device: Device) -> Iterator[str]:
    sys_dir = (_SYS_BLOCK / f"{os.major(device.rdev)}:{os.minor(device.rdev)}").resolve()
    for sub in [sys_dir] + [sys_dir / p for p, _ in device.partitions]:
        for holder in sorted((sub / "holders").glob("*")):
            yield f"{sub.name} by {holder.name}"


def refuse_in_use(device: Device) -> None:
    """Refuse a device any part of which is mounted, swapped on or held (dm, md, LVM)."""
    for what, uses in (
        ("mounted", _mounts),
        ("in use", _swaps),
        ("held", _holders),
    ):
        found = sorted(set(uses(device)))
        if found:
            raise DeviceError(f"{device.path} is {what}: {', '.join(found)}", hint=_IN_USE_HINT)


def partition_table(fd: int) -> str | None:
    """The partition table on the device's first sectors: 'GPT', 'MBR' or None."""
    found = gpt.tables_found(os.pread(fd, 8 * 512, 0))
    return "GPT" if "GPT" in found else "MBR" if "MBR" in found else None


def refuse_data(device: Device, fd: int, size: int, force: bool) -> None:
    """Refuse a device smaller than ``size``, and one holding partitions unless ``force``."""
    have = os.lseek(fd, 0, os.SEEK_END)
    if have < size:
        raise DeviceError(
            f"{device.path} holds {have} bytes, the image {size}",
            hint="use a larger card",
        )
    table = partition_table(fd)
    if force or not (device.partitions or table):
        return
    parts = ", ".join(p for p, _ in device.partitions)
    held = f"partitions ({parts})" if parts else f"a partition table ({table})"
    raise DeviceError(
        f"{device.path} holds {held}: flashing destroys what is on them",
        hint="check that it is the right card (lsblk), then pass --force to write over it",
    )


def _open_exclusive(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise DeviceError(
                f"{path} is in use (the kernel refuses it)", hint=_IN_USE_HINT
            ) from None
        raise DeviceError(f"cannot open {path}: {e.strerror}") from None


@contextlib.contextmanager
def open_block(path: Path, rdev: int, size: int, force: bool) -> Iterator[tuple[BinaryIO, Path]]:
    """The block device at ``path`` opened for writing, after every refusal."""
    device = inspect(path, rdev)
    refuse_in_use(device)
    fd = _open_exclusive(path)
    try:
        refuse_data(device, fd, size, force)
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(fd, "r+b", closefd=False) as f:
            yield f, path
        with contextlib.suppress(OSError):  # let the kernel see the new partition table
            fcntl.ioctl(fd, BLKRRPART)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_file(path: Path, size: int) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file of ``size`` (reading zeros) beside ``path``, renamed over it on success."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "r+b") as f:
            f.truncate(size)
            yield f, Path(tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def target_kind(path: Path, image: Path) -> tuple[str, int]:
    """('block', rdev), ('file', 0) or ('new', 0); refuses anything else and the image itself."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise DeviceError(f"{path.parent} is not a directory") from None
        return "new", 0
    if stat.S_ISBLK(st.st_mode):
        return "block", st.st_rdev
    if not stat.S_ISREG(st.st_mode):
        raise DeviceError(f"{path} is neither a block device nor a regular file")
    src = image.stat()
    if (st.st_ino, st.st_dev) == (src.st_ino, src.st_dev):
        raise DeviceError(f"{path} is the image itself")
    return "file", 0


@contextlib.contextmanager
def open_target(path: Path, image: Path, size: int, force: bool) -> Iterator[tuple[BinaryIO, Path]]:
    """``path`` opened for writing an image of ``size``, with the path its bytes are at."""
    kind, rdev = target_kind(path, image)
    opened = open_block(path, rdev, size, force) if kind == "block" else open_file(path, size)
    with opened as target:
        yield target
