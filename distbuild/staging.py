"""The output directory only ever shows complete builds.

``build`` and ``merge`` write a build into a staging directory next to its
final place and swap it in at the end (:func:`staged`); a build killed half
way leaves only scratch directories, which the next one reaps or puts back.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distbuild import scratch
from distbuild.core import ui
from distbuild.core.errors import DistbuildError


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as e:
        raise DistbuildError(
            f"cannot write to the output directory {out}: {e.strerror}",
            hint="choose another --out or fix its permissions",
        ) from None


def check_directory(path: Path) -> None:
    """Refuse a file (or a dangling link) where the build puts a directory."""
    if (path.is_symlink() and not path.exists()) or (path.exists() and not path.is_dir()):
        raise DistbuildError(
            f"{path} is in the way: it should be a directory of builds, but is a file",
            hint="move it away, or choose another --out",
        )


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A staging directory for ``final``: swapped into place if the block succeeds, else removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch.reap(final.parent, ".partial-")
    recover_swaps(final.parent)
    staging = scratch.make_dir(final.parent, f".{final.name}.partial-")
    try:
        yield staging
        swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging`` so readers see the old or the new build.

    SIGTERM/SIGINT wait until both renames are done; a build killed between
    them leaves ``.<version>.old-*``, which :func:`recover_swaps` puts back.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{scratch.owner_tag()}-")
            os.replace(final, old)
            os.replace(staging, final)
        else:
            old = None
            os.replace(staging, final)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def recover_swaps(parent: Path) -> None:
    """Put back a build a killed swap moved aside; remove the ones it replaced."""
    for name in sorted(os.listdir(parent)):
        version = name[1:].split(".old-", 1)[0] if name.startswith(".") else ""
        if (
            ".old-" in name
            and version
            and not (parent / version).exists()
            and not scratch.owner_alive(name, ".old-")
        ):
            os.replace(parent / name, parent / version)
            ui.note(f"restored {parent / version}, moved aside by a build that was killed")
    scratch.reap(parent, ".old-")
