"""Atomic file replacement, shared by build code, boot control and the node.

Standard library only: the node updater imports it (DESIGN §6).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int | None = 0o644) -> None:
    """Temp file in the same directory, fsync, rename: readers see old or new.

    ``mode=None`` keeps the temp file's 0600 and skips chmod (FAT has no modes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def clone_file(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` as a file of its own (never a hard link).

    A reflink (FICLONE: btrfs, xfs, …) shares the blocks copy-on-write, so a
    later write to either file leaves the other as it was; elsewhere the
    bytes are copied.
    """
    with src.open("rb") as s, dest.open("wb") as d:
        try:
            fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            return
        except OSError:
            pass
    shutil.copyfile(src, dest)
