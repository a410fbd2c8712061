"""Scratch space a build owns, and what happens to it when the build dies.

Every staging or work directory carries its owner in its name:
``<prefix><pid>-<start>-<boot>-<random>``, where ``start`` is the process's
start time (clock ticks since boot, /proc/<pid>/stat field 22) and ``boot``
the start of the kernel's boot id, so a reused pid or a reboot never makes a
dead build's leftovers look alive. A build removes its own scratch space on
the way out (also on SIGTERM/SIGINT, see cli/main.py); :func:`reap` removes
what a killed build (SIGKILL, power cut) left, once its owner is gone.

:func:`os_error` turns an OSError from anywhere in a build into an error the
user can act on (a full disk, a file where a directory should be).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distbuild.core import ui
from distbuild.core.errors import CommandError, DistbuildError

_TAG = re.compile(r"(\d+)-(\d+)-([0-9a-f]{8})-")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return "0" * 8


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_tag() -> str:
    """This process as ``<pid>-<start>-<boot>``."""
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or 0}-{_boot_id()}"


def make_dir(parent: Path, prefix: str) -> Path:
    """A new directory in ``parent`` named ``<prefix><owner tag>-<random>``."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=parent))


def owner_alive(name: str, marker: str) -> bool:
    """Whether the process tagged after ``marker`` in a name still runs (True if none is)."""
    m = _TAG.match(name.split(marker, 1)[-1]) if marker in name else None
    if not m:
        return True
    pid, start, boot = int(m[1]), int(m[2]), m[3]
    return boot == _boot_id() and _start_time(pid) == start


def reap(parent: Path, marker: str) -> list[Path]:
    """Remove the entries ``…<marker><tag>-…`` in ``parent`` whose owner is gone."""
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(parent) if marker in n]
    except OSError:
        return removed
    for name in sorted(names):
        if owner_alive(name, marker):
            continue
        path = parent / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        ui.note(f"removed {path}, left by a build that was killed")
        removed.append(path)
    return removed


def _full(paths: tuple[Path, ...]) -> list[Path]:
    """Those of ``paths`` whose file system has (almost) no space left."""
    full = []
    for p in paths:
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < 1 << 20:
            full.append(p)
    return full


def _owning(where: str | None, dirs: tuple[Path, ...]) -> list[Path]:
    """The one of ``dirs`` that holds the path ``where``, if any."""
    if where is None:
        return []
    return [d for d in dirs if Path(where).is_relative_to(d)][:1]


def os_error(e: OSError, *dirs: Path) -> DistbuildError:
    """A user error for an OSError during a build that writes to ``dirs``."""
    where = os.fsdecode(e.filename) if e.filename is not None else None
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        named = _full(dirs) or _owning(where, dirs) or list(dirs)
        return DistbuildError(
            f"no space left on the device of {', '.join(map(str, named))}",
            hint="free some space there (or point --out / DISTBUILD_CACHE elsewhere) and build again",
        )
    hints = {
        errno.EACCES: "fix the permissions of that path, or choose another --out",
        errno.EPERM: "fix the permissions of that path, or choose another --out",
        errno.EROFS: "that file system is read-only: choose another --out or DISTBUILD_CACHE",
        errno.ENOTDIR: "a file is in the way of a directory: move it, or choose another --out",
        errno.EEXIST: "something is in the way: move it, or choose another --out",
    }
    return DistbuildError(
        f"{where + ': ' if where else ''}{e.strerror or e}",
        hint=hints.get(e.errno or 0, "check that path and its file system, then build again"),
    )


@contextmanager
def user_errors(*dirs: Path) -> Iterator[None]:
    """Turn OSErrors (and tools that ran out of space) into errors naming the path.

    Entered inside the clean-up of a staging directory, so a full disk is
    measured while the partial files still fill it.
    """
    try:
        yield
    except OSError as e:
        raise os_error(e, *dirs) from None
    except CommandError as e:
        if "No space left on device" not in e.stderr:
            raise
        raise os_error(OSError(errno.ENOSPC, e.message), *dirs) from None
