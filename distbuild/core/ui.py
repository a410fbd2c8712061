"""What the user sees on stderr: command echo with -v, progress bars, notes.

Progress bars are drawn only on a terminal; in CI and tests they stay quiet so
logs are not flooded with carriage returns.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_state = {"verbose": 0, "quiet": False}


def set_verbosity(verbose: int, quiet: bool = False) -> None:
    _state["verbose"] = verbose
    _state["quiet"] = quiet


def verbose() -> int:
    return int(_state["verbose"])


def note(message: str) -> None:
    """A one-line status message."""
    if not _state["quiet"]:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A ``warning: …`` line, shown even with -q."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def debug(message: str) -> None:
    if _state["verbose"]:
        print(message, file=sys.stderr, flush=True)


def _tty() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not _state["quiet"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """A byte counter drawn as a bar on a terminal, summarised once elsewhere."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._last = 0.0
        self._start = time.monotonic()
        self._tty = _tty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty and now - self._last > 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            text = f"\r{self.label} [{bar:<30}] {_human(self.done)}/{_human(self.total)}"
        else:
            text = f"\r{self.label} {_human(self.done)}"
        sys.stderr.write(text)
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty:
            self._draw()
            sys.stderr.write("\n")
        elif _state["verbose"]:
            elapsed = time.monotonic() - self._start
            debug(f"{self.label}: {_human(self.done)} in {elapsed:.1f}s")


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Progress]:
    bar = Progress(label, total)
    try:
        yield bar
    finally:
        bar.close()
