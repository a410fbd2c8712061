"""``distbuild flash``: write a disk image onto a card (or any block device or file).

The provisioning file, if any, is checked by the node's own parser before a
byte is written; the image is written (zero runs skipped when the target is a
fresh file, written out on a device, whose old contents must go), synced,
read back and compared; then the provisioning file goes onto the written
boot partition, where the node reads it on its first boot.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError, UsageError
from distbuild.disk.diskimg import CHUNK, copy_sparse, sha256_range
from distbuild.disk.provision import check_provision_file, write_provision


@dataclass(frozen=True)
class Flashed:
    image: str
    target: str
    bytes: int
    sha256: str
    provision: str | None  # its name on the boot partition


def _check_target(image: Path, target: Path) -> bool:
    """True for a block device; refuses the image itself, a mounted device, a too-small one."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    if stat.S_ISBLK(st.st_mode):
        _refuse_mounted(target)
        return True
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{target} is neither a block device nor a regular file")
    if st.st_ino == image.stat().st_ino and st.st_dev == image.stat().st_dev:
        raise UsageError(f"{target} is the image itself")
    return False


def _refuse_mounted(device: Path) -> None:
    """A device (or one of its partitions) in use is never written over."""
    real = os.path.realpath(device)
    name = os.path.basename(real)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            source = line.split(" ", 1)[0]
            if source.startswith("/dev/") and os.path.basename(os.path.realpath(source)).startswith(
                name
            ):
                raise UsageError(
                    f"{device} is in use: {source} is mounted",
                    hint="unmount every partition of the card first (umount /dev/sdX*)",
                )


def _copy(image: Path, target: Path, device: bool) -> int:
    """Write ``image`` onto ``target`` and sync it; returns its size."""
    size = image.stat().st_size
    if not device:  # a fresh file reads zeros where nothing is written
        with target.open("wb") as f:
            f.truncate(size)
        copy_sparse(image, target, 0)
    else:  # a card holds old data: every byte is written
        with image.open("rb") as src, target.open("r+b") as dest:
            if dest.seek(0, os.SEEK_END) < size:
                raise DistbuildError(f"{target} is smaller than the image ({size} bytes)")
            dest.seek(0)
            shutil.copyfileobj(src, dest, CHUNK)
    with target.open("r+b") as f:
        os.fsync(f.fileno())
    return size


def _digest(path: Path, size: int) -> str:
    with path.open("rb") as f:
        return sha256_range(f, 0, size)


def flash(image: Path, target: Path, provision: Path | None = None) -> Flashed:
    """Write ``image`` onto ``target``, check it, then put ``provision`` on its boot partition."""
    if provision is not None:
        check_provision_file(provision)  # before a byte of the card is touched
    device = _check_target(image, target)
    size = _copy(image, target, device)
    digest = _digest(image, size)
    if _digest(target, size) != digest:
        raise DistbuildError(
            f"{target} does not read back as the image written onto it",
            hint="the card may be failing or fake: try another one",
        )
    name = write_provision(target, provision) if provision is not None else None
    return Flashed(str(image), str(target), size, digest, name)
