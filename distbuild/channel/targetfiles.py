"""Target files of a channel: stored atomically after checking size and hash."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from distbuild.errors import DistbuildError


def store_file(source: Path, dest: Path, sha256: str, length: int, *, link: bool) -> None:
    """Put ``source`` at ``dest`` atomically after checking its size and hash."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            pass  # another filesystem: copy instead
        else:
            if tmp.stat().st_size == length:
                os.replace(tmp, dest)
                return
            tmp.unlink()
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != length or digest.hexdigest() != sha256:
            raise DistbuildError(
                f"{source} changed since it was recorded (size {size}, expected {length}; "
                f"sha256 {digest.hexdigest()[:16]}…, expected {sha256[:16]}…)",
                hint="rebuild it; a published file must match its build record",
            )
        os.chmod(name, 0o644)
        os.replace(name, dest)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def prune_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
