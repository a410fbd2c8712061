"""``distbuild-update grow-data``: the first boot gives ``data`` the rest of the disk.

rcS runs it on every boot, before anything writes to /data. Each step is
found undone from the disk itself and is safe to repeat, so a power cut
anywhere is finished by the next boot:

1. the partition table (:mod:`distbuild.node.gpt`: backup first, then the
   primary in one write);
2. the kernel's view of the partition, moved with ``BLKPG_RESIZE_PARTITION``
   (a re-read of the whole table is refused while root and data are in use);
3. the ext4 on it, grown online by ``resize2fs`` (mounted on /data; growing it
   again is a no-op).

Once all three are done it writes :data:`DONE` (``disk=<sectors>
data=<sectors>`` from sysfs), which rcS compares with sysfs to skip starting
Python on every later boot; a card copied onto a larger one runs it again.
"""

from __future__ import annotations

import array
import fcntl
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic
from distbuild.core.run import run, which
from distbuild.node import gpt
from distbuild.node.config import NodePaths
from distbuild.node.system import partition_by_label

MIB = 1 << 20
BLKPG = 0x1269
BLKPG_RESIZE_PARTITION = 3
BLKPG_PARTITION = struct.Struct("@qqi64s64s")  # start, length (bytes), pno, devname, volname
EXT4_MAGIC = 0xEF53
RESIZE_TIMEOUT = 1800.0  # a 1 TB card's worth of block groups on a slow card
DONE = "/var/lib/distbuild/data-grown"


class GrowError(DistbuildError):
    """The data partition cannot be grown here."""


def _sysfs(paths: NodePaths, name: str, attr: str) -> str:
    return (paths.sys_block / name / attr).read_text().strip()


def _devices(paths: NodePaths) -> tuple[Path, Path, int]:
    """The data partition's device, its disk's device and its partition number."""
    part = partition_by_label(paths, gpt.DATA_LABEL)
    if part is None:
        raise GrowError(
            "no partition labelled 'data'",
            hint="is this node running from a distbuild disk image?",
        )
    disk_name = (paths.sys_block / part.name).resolve().parent.name
    number = int(_sysfs(paths, part.name, "partition"))
    return part, paths.at(f"/dev/{disk_name}"), number


def _tell_kernel(fd: int, number: int, start: int, length: int) -> None:
    """Resize partition ``number`` in the kernel's table (it may be mounted)."""
    part = array.array("B", BLKPG_PARTITION.pack(start, length, number, b"", b"").ljust(152, b"\0"))
    arg = struct.pack("@iiiP", BLKPG_RESIZE_PARTITION, 0, len(part), part.buffer_info()[0])
    fcntl.ioctl(fd, BLKPG, arg)


def fs_size(disk: gpt.Disk, start_lba: int) -> tuple[int, int] | None:
    """The ext4 at ``start_lba``: (its size in bytes, one block group in bytes)."""
    sb = disk.read(start_lba + 2, 2)
    if struct.unpack_from("<H", sb, 0x38)[0] != EXT4_MAGIC:
        return None
    block = 1024 << min(struct.unpack_from("<I", sb, 0x18)[0], 6)
    blocks = struct.unpack_from("<I", sb, 0x04)[0]
    if struct.unpack_from("<I", sb, 0x60)[0] & 0x80:  # INCOMPAT_64BIT
        blocks |= struct.unpack_from("<I", sb, 0x150)[0] << 32
    return blocks * block, struct.unpack_from("<I", sb, 0x20)[0] * block


def grow_data(paths: NodePaths, say: Callable[[str], None]) -> dict[str, Any]:
    """Grow ``data`` to the end of its disk; what was found and done, for ``--json``."""
    part, disk_dev, number = _devices(paths)
    fd = os.open(disk_dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        disk = gpt.Disk(fd)
        plan = gpt.plan(disk)
        size = (plan.new_last - plan.data.first + 1) * gpt.SECTOR
        if plan.grows:
            say(
                f"distbuild-os: data: growing partition from {_mib(plan.data)} MiB to {size // MIB} MiB"
            )
        writes = gpt.apply(disk, plan)
        kernel = _kernel_step(paths, fd, part, number, plan.data.first * gpt.SECTOR, size)
        found = fs_size(disk, plan.data.first)
    finally:
        os.close(fd)
    result: dict[str, Any] = {
        "device": str(part),
        "disk": str(disk_dev),
        "partition_mib": size // MIB,
        "table_writes": writes,
        "kernel": kernel,
        "filesystem": _fs_step(part, found, size, kernel, say),
    }
    if result["filesystem"] in ("full size", "grown"):
        sizes = (
            f"disk={_sysfs(paths, part.name, '../size')} data={_sysfs(paths, part.name, 'size')}"
        )
        write_atomic(paths.at(DONE), f"{sizes}\n".encode())
    return result


def _fs_step(
    part: Path, found: tuple[int, int] | None, size: int, kernel: str, say: Callable[[str], None]
) -> str:
    """Grow the ext4 on ``part`` (mounted) to ``size`` bytes, unless within a group of it."""
    if found is None:
        return "no ext4 found"
    if found[0] + found[1] > size:  # the kernel leaves off a last group too small to hold
        return "full size"
    if kernel == "not a block device" or kernel.startswith("old size"):
        return "to grow once the kernel sees the partition's size"
    say(f"distbuild-os: data: partition is {size // MIB} MiB; growing the filesystem")
    run([which("resize2fs", "e2fsprogs"), part], capture=True, timeout=RESIZE_TIMEOUT)
    say(f"distbuild-os: data: grown to {size // MIB} MiB")
    return "grown"


def _mib(e: gpt.Entry) -> int:
    return (e.last - e.first + 1) * gpt.SECTOR // MIB


def _kernel_step(paths: NodePaths, fd: int, part: Path, number: int, start: int, size: int) -> str:
    """Bring the kernel's idea of the partition to ``size`` bytes; what happened."""
    if not stat.S_ISBLK(os.fstat(fd).st_mode):
        return "not a block device"
    if int(_sysfs(paths, part.name, "size")) * gpt.SECTOR == size:
        return "up to date"
    try:
        _tell_kernel(fd, number, start, size)
    except OSError as e:
        return f"old size until reboot ({e.strerror})"
    return "resized"


__all__ = ["GrowError", "fs_size", "grow_data"]
