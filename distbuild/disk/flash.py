"""``distbuild flash``: write a disk image onto a card (or any block device or file).

The provisioning file, if any, is checked by the node's own parser before a
byte is written; the image is written (zero runs skipped when the target is a
fresh file, written out on a device, whose old contents must go), synced,
read back and compared; then the provisioning file goes onto the written
boot partition, where the node reads it on its first boot.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError, UsageError
from distbuild.disk.provision import check_provision_file, write_provision

CHUNK = 4 << 20


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


def _copy(image: Path, target: Path, device: bool) -> tuple[int, str]:
    """Write ``image`` onto ``target``; returns (bytes, sha256 of the image)."""
    h = hashlib.sha256()
    size = image.stat().st_size
    flags = os.O_WRONLY | (0 if device else os.O_CREAT | os.O_TRUNC)
    fd = os.open(target, flags | os.O_CLOEXEC, 0o644)
    try:
        if device and os.lseek(fd, 0, os.SEEK_END) < size:
            raise DistbuildError(f"{target} is smaller than the image ({size} bytes)")
        os.lseek(fd, 0, os.SEEK_SET)
        with image.open("rb") as src:
            offset = 0
            while chunk := src.read(CHUNK):
                h.update(chunk)
                # A fresh file reads zeros where nothing was written; a card holds old data.
                if device or chunk.count(0) != len(chunk):
                    _write_at(fd, chunk, offset)
                offset += len(chunk)
        if not device:
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, h.hexdigest()


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _verify(target: Path, size: int, expected: str) -> None:
    h = hashlib.sha256()
    with target.open("rb") as f:
        left = size
        while left and (chunk := f.read(min(CHUNK, left))):
            h.update(chunk)
            left -= len(chunk)
    if h.hexdigest() != expected:
        raise DistbuildError(
            f"{target} does not read back as the image written onto it",
            hint="the card may be failing or fake: try another one",
        )


def flash(image: Path, target: Path, provision: Path | None = None) -> Flashed:
    """Write ``image`` onto ``target``, check it, then put ``provision`` on its boot partition."""
    if provision is not None:
        check_provision_file(provision)  # before a byte of the card is touched
    device = _check_target(image, target)
    size, digest = _copy(image, target, device)
    _verify(target, size, digest)
    name = write_provision(target, provision) if provision is not None else None
    return Flashed(str(image), str(target), size, digest, name)
