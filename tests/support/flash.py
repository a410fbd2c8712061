"""A small board disk (GPT, an ext4 partition with files) and its real bmap, and loop devices.

The disk is sparse on purpose: its bmap maps the partition table and the file
system's used blocks only, so a flash that writes holes is caught.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MIB = 1 << 20
DISK_SIZE = 16 * MIB
PART_START = 1 * MIB


def need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def make_disk(directory: Path, name: str = "disk.img") -> Path:
    """``directory/name``: a 16 MiB GPT disk, ext4 with random files at 1 MiB, + ``.bmap``."""
    need("sgdisk", "mkfs.ext4", "bmaptool")
    directory.mkdir(parents=True, exist_ok=True)
    files = directory / "files"
    files.mkdir(exist_ok=True)
    for i in range(3):
        (files / f"f{i}").write_bytes(os.urandom(200_000 + i * 1000))
    fs = directory / "fs.img"
    subprocess.run(["truncate", "-s", str(12 * MIB), str(fs)], check=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", str(files), str(fs)], check=True
    )
    disk = directory / name
    with disk.open("wb") as f:
        f.truncate(DISK_SIZE)
    subprocess.run(
        ["sgdisk", "-n", f"1:{PART_START // 512}:+12M", "-c", "1:root", str(disk)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "dd",
            f"if={fs}",
            f"of={disk}",
            "bs=1M",
            f"seek={PART_START // MIB}",
            "status=none",
            "conv=notrunc,sparse",
        ],
        check=True,
    )
    fs.unlink()
    shutil.rmtree(files)
    text = subprocess.run(["bmaptool", "create", str(disk)], check=True, capture_output=True).stdout
    (directory / f"{name}.bmap").write_bytes(text)
    return disk


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[Path]:
    """A real loop device over ``backing``, its partitions scanned, detached afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices")
    need("losetup", "partx")
    dev = subprocess.run(
        ["losetup", "-f", "--show", "-P", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["partx", "-a", dev], capture_output=True)  # may already be there
        yield Path(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def card(path: Path, size: int, fill: bytes = b"\xaa") -> Path:
    """A card's backing file of ``size`` bytes that held ``fill`` bytes before."""
    path.write_bytes(fill * size)
    return path
