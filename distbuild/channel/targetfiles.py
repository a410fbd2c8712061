"""Files of a channel: targets stored after checking size and hash; retired files removed late."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic

JOURNAL = ".retired"


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


def collect_retired(
    channel: Path,
    targets: Path,
    now: datetime,
    grace: timedelta,
    retired: list[Path],
    referenced: Callable[[Path], bool],
) -> None:
    """Delete files retired ``grace`` ago and no longer referenced; log ``retired`` at ``now``.

    Readers that fetched the previous timestamp may still be walking the
    metadata it leads to, so nothing is deleted at once: the journal
    ``.retired`` remembers when each file left the current state.
    """
    journal = channel / JOURNAL
    stamp_now = int(now.timestamp())
    deadline = stamp_now - int(grace.total_seconds())
    text = journal.read_text() if journal.is_file() else ""
    text = text[: text.rfind("\n") + 1]  # a torn last line (crash) is dropped
    # Lines are in time order: the due ones come first, so stop at the first that is not.
    start = 0
    while start < len(text):
        end = text.index("\n", start) + 1
        stamp, _, rel = text[start:end].strip().partition(" ")
        if stamp.isdigit() and int(stamp) > deadline:
            break
        path = channel / rel
        inside = rel and not rel.startswith("/") and ".." not in Path(rel).parts
        if inside and not referenced(path):
            path.unlink(missing_ok=True)
            prune_empty_dirs(path.parent, targets)
        start = end
    fresh = "".join(f"{stamp_now} {p.relative_to(channel)}\n" for p in retired)
    if start or not journal.is_file() or journal.stat().st_size != len(text):
        write_atomic(journal, (text[start:] + fresh).encode())
    elif fresh:
        with open(journal, "a") as f:  # the common case: nothing due yet
            f.write(fresh)
            f.flush()
            os.fsync(f.fileno())
