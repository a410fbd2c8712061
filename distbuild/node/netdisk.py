"""The network installer's target disk: which one, and whether it may be written.

The disk is ``install_disk=`` from the kernel command line, or else the only
non-removable whole disk in ``/sys/block`` (loop, ram, zram and optical
drives left out). It is refused when it is smaller than the image, when it
is mounted, and when it holds partitions (the kernel lists some, or its first
or last sectors carry an MBR partition table or a GPT) unless the command
line says ``install_wipe=1``.

A disk left by an interrupted install has no partition table (the installer
writes the table last, :mod:`distbuild.node.netinstall_write`), so the next
network boot finds it blank and installs again without being told to wipe.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.node import gpt
from distbuild.node.config import NodePaths
from distbuild.node.install import device_size
from distbuild.node.tufclient import Refused

SECTOR = 512
DEVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
NOT_DISKS = ("loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md")


class DiskRefused(Refused):
    """A target disk the installer will not write."""

    exit_code = 9


@dataclass(frozen=True)
class TargetDisk:
    """The disk the image goes to: its device node, kernel name and size."""

    device: Path
    name: str
    size: int


def _device_name(value: str) -> str:
    """``vda`` from ``vda`` or ``/dev/vda``; anything else is refused."""
    name = value.removeprefix("/dev/")
    if not DEVICE_NAME.fullmatch(name):
        raise DiskRefused(
            f"install_disk={value!r} is not a disk name",
            hint="give the whole disk's kernel name, e.g. install_disk=vda or install_disk=/dev/sda",
        )
    return name


def _whole_disks(paths: NodePaths) -> list[str]:
    try:
        names = sorted(p.name for p in paths.at("/sys/block").iterdir())
    except OSError:
        return []
    return [n for n in names if DEVICE_NAME.fullmatch(n) and not n.startswith(NOT_DISKS)]


def _sys_flag(paths: NodePaths, name: str, flag: str) -> str:
    try:
        return paths.at(f"/sys/block/{name}/{flag}").read_text().strip()
    except OSError:
        return ""


def pick(paths: NodePaths, requested: str | None) -> TargetDisk:
    """The disk named by ``install_disk=``, or the only non-removable one."""
    if requested is not None:
        name = _device_name(requested)
        if paths.at(f"/sys/class/block/{name}/partition").exists():
            raise DiskRefused(
                f"install_disk={requested} is a partition, not a whole disk",
                hint=f"name the disk it is on (e.g. install_disk={name.rstrip('0123456789p')})",
            )
    else:
        fixed = [n for n in _whole_disks(paths) if _sys_flag(paths, n, "removable") != "1"]
        fixed = [n for n in fixed if _sys_flag(paths, n, "size") not in ("", "0")]
        if len(fixed) != 1:
            found = ", ".join(fixed) or "none"
            raise DiskRefused(
                f"found {len(fixed)} non-removable disks ({found}); the installer needs one",
                hint="name the disk to install to on the kernel command line: install_disk=NAME",
            )
        name = fixed[0]
    device = paths.at(f"/dev/{name}")
    return TargetDisk(device, name, _size(device))


def _size(device: Path) -> int:
    try:
        return device_size(device)
    except DistbuildError as e:
        raise DiskRefused(f"disk {device}: {e.message}", hint="is install_disk= right?") from None


def partitions(paths: NodePaths, disk: TargetDisk) -> list[str]:
    """What says this disk holds partitions: kernel-listed ones and on-disk tables."""
    found: list[str] = []
    try:
        entries = sorted(paths.at(f"/sys/block/{disk.name}").iterdir())
    except OSError:
        entries = []
    found += [e.name for e in entries if (e / "partition").exists()]
    with disk.device.open("rb") as f:
        head = f.read(8 * SECTOR)
        f.seek(max(0, disk.size - SECTOR))
        tail = f.read(SECTOR)
    return found + [_TABLES[table] for table in gpt.tables_found(head, tail)]


_TABLES = {
    "MBR": "an MBR partition table",
    "GPT": "a GPT",
    "backup GPT": "a backup GPT at its end",
}


def mounted(paths: NodePaths, disk: TargetDisk) -> list[str]:
    """Mount points of the disk or its partitions."""
    try:
        lines = paths.mounts.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1 and re.fullmatch(rf"/dev/{re.escape(disk.name)}(p?[0-9]+)?", fields[0]):
            out.append(fields[1])
    return out


def check(paths: NodePaths, disk: TargetDisk, image_size: int, wipe: bool) -> list[str]:
    """Refuse a disk too small, in use, or partitioned (unless ``wipe``); what a wipe removes."""
    if disk.size < image_size:
        raise DiskRefused(
            f"disk {disk.name} has {disk.size} bytes, smaller than the image's {image_size}",
            hint="install to a larger disk (install_disk=NAME)",
        )
    if in_use := mounted(paths, disk):
        raise DiskRefused(
            f"disk {disk.name} is in use (mounted on {', '.join(in_use)})",
            hint="the installer writes only a disk nothing has mounted",
        )
    found = partitions(paths, disk)
    if found and not wipe:
        raise DiskRefused(
            f"disk {disk.name} holds partitions ({', '.join(found)}); not writing it",
            hint="to erase it and install, add install_wipe=1 to the kernel command line",
        )
    return found


def require_writable(disk: TargetDisk) -> None:
    """A read-only device (a write-protected card) is refused before anything is written."""
    try:
        fd = os.open(disk.device, os.O_RDWR)
    except OSError as e:
        raise DistbuildError(f"cannot open disk {disk.name} for writing: {e.strerror}") from None
    os.close(fd)
