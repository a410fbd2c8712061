"""The publisher's list of releases a channel holds beyond its release index.

``releases.json`` lists the newest :data:`~distbuild.core.releases.WINDOW`
releases per image: all a node needs, and small to download however long the
history. A channel that keeps more has the older ones in
``<channel>/.history``, one JSON line per release, oldest first, which only
the publisher reads (for retention and promotion; it is not signed and not
needed by readers). Releases leave the index at the new end of this file (an
append) and retention drops them from the old end, so a publish parses a
line or two, not the history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic
from distbuild.core.releases import Release, version_key

HISTORY = ".history"


class History:
    """Releases held but not listed, oldest first (loaded line by line, lazily)."""

    def __init__(self, channel_dir: Path) -> None:
        self.path = channel_dir / HISTORY

    def _lines(self) -> list[str]:
        if not self.path.is_file():
            return []
        text = self.path.read_text()
        # A crash mid-append leaves a line without its newline: not a release.
        return text[: text.rfind("\n") + 1].splitlines()

    def _append(self, lines: list[str]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(f"{line}\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def _write(self, lines: list[str]) -> None:
        write_atomic(self.path, "".join(f"{line}\n" for line in lines).encode())

    def oldest(self, image: str, count: int = 1) -> list[Release]:
        """The ``count`` oldest releases of ``image``, oldest first."""
        found: list[Release] = []
        for line in self._lines():
            if len(found) >= count:
                break
            release = _parse(line)
            if release.image == image:
                found.append(release)
        return found

    def find(self, image: str | None, version: str) -> list[Release]:
        """Held releases with ``version`` (of ``image``, if given); reads every line."""
        needle = json.dumps(version)
        return [
            r
            for r in (_parse(line) for line in self._lines() if needle in line)
            if r.version == version and (image is None or r.image == image)
        ]

    def push(self, releases: list[Release]) -> None:
        """Add releases that left the index (normally newer than every line here)."""
        lines = self._lines()
        held = (
            {(r.image, r.version) for r in map(_parse, lines[-len(releases) :])} if lines else set()
        )
        fresh = [r for r in releases if (r.image, r.version) not in held]
        if not fresh:
            return
        ordered = sorted(fresh, key=lambda r: version_key(r.version))
        torn = self.path.is_file() and not self.path.read_bytes().endswith(b"\n")
        if not torn and all(_after(lines, r) for r in ordered):
            self._append([_dump(r) for r in ordered])  # the usual case
        else:  # an old version published late (or a torn last line): rewrite
            every = [_parse(line) for line in lines] + ordered
            every.sort(key=lambda r: version_key(r.version))
            self._write([_dump(r) for r in every])

    def drop(self, releases: list[Release]) -> None:
        """Forget releases (retention); they are among the oldest, so this stops early."""
        if not releases:
            return
        gone = {(r.image, r.version) for r in releases}
        lines = self._lines()
        kept: list[str] = []
        skipped = 0
        for i, line in enumerate(lines):
            if skipped == len(gone):
                kept.extend(lines[i:])
                break
            r = _parse(line)
            if (r.image, r.version) in gone:
                skipped += 1
            else:
                kept.append(line)
        self._write(kept)


def _after(lines: list[str], release: Release) -> bool:
    """Whether ``release`` is newer than every held release of its image."""
    for line in reversed(lines):
        held = _parse(line)
        if held.image == release.image:
            return version_key(release.version) > version_key(held.version)
    return True


def _dump(release: Release) -> str:
    return json.dumps(release.to_dict(), sort_keys=True, separators=(",", ":"))


def _parse(line: str) -> Release:
    try:
        return Release.from_dict(json.loads(line))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DistbuildError(
            f"unreadable line in the channel's {HISTORY} ({e})",
            hint="fix or remove that line; it only lists releases for retention",
        ) from None
