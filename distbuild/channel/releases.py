"""The release index of a channel (``releases.json``) and rollout waves.

A TUF client cannot list targets, so every channel carries one extra target,
``releases.json``: for each image, the releases the channel holds, the files
of each release per arch, when it was published and its rollout waves. A node
fetches it through TUF (so it is verified like any target), picks the newest
release for its image and arch whose wave has come for its seed, and then
fetches that release's targets by name (``<image>/<version>/<arch>/<file>``).

Waves follow Bottlerocket's model: a node has a seed in ``[0, MAX_SEED)``; a
wave opens ``after`` seconds past the publication and covers every seed below
its ``max_seed``. Seeds beyond the last wave may update once the last wave has
opened; a release without waves is open to every node at once. The schedule
is data in the signed index, so a static repository serves any fleet size.

This module uses only the standard library: the node updater imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from distbuild.errors import DistbuildError

INDEX_TARGET = "releases.json"
INDEX_KIND = "releases"
INDEX_FORMAT = 1
MAX_SEED = 2048


@dataclass(frozen=True)
class Wave:
    """Seeds below ``max_seed`` may update ``after`` seconds past publication."""

    after: int
    max_seed: int


@dataclass(frozen=True)
class Release:
    """One version of one image as a channel holds it."""

    image: str
    version: str
    published: int  # seconds since the epoch, UTC
    waves: tuple[Wave, ...] = ()
    # arch -> file basename -> artifact kind
    files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def arches(self) -> list[str]:
        return sorted(self.files)

    def target_path(self, arch: str, file: str) -> str:
        """The TUF target name of one file of this release."""
        return target_path(self.image, self.version, arch, file)

    def target_paths(self, arch: str | None = None) -> list[str]:
        """Every target name of this release (of one arch, if given)."""
        return [
            self.target_path(a, f)
            for a in sorted(self.files)
            if arch is None or a == arch
            for f in sorted(self.files[a])
        ]

    def opens_at(self, seed: int) -> int:
        """When a node with ``seed`` may install this release (epoch seconds)."""
        if not self.waves:
            return self.published
        for wave in self.waves:
            if seed < wave.max_seed:
                return self.published + wave.after
        return self.published + self.waves[-1].after

    def is_open(self, seed: int, now: int) -> bool:
        """Whether a node with ``seed`` may install this release at ``now``."""
        return self.opens_at(seed) <= now

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "version": self.version,
            "published": iso(self.published),
            "waves": [{"after": w.after, "max_seed": w.max_seed} for w in self.waves],
            "files": {a: dict(sorted(fs.items())) for a, fs in sorted(self.files.items())},
        }


@dataclass(frozen=True)
class ReleaseIndex:
    """All releases of a channel, newest version first within each image."""

    channel: str
    releases: tuple[Release, ...] = ()

    def images(self) -> list[str]:
        return sorted({r.image for r in self.releases})

    def of(self, image: str) -> list[Release]:
        """The releases of ``image``, newest version first."""
        return [r for r in self.releases if r.image == image]

    def find(self, image: str, version: str) -> Release | None:
        for r in self.releases:
            if r.image == image and r.version == version:
                return r
        return None

    def latest(
        self, image: str, arch: str, *, seed: int | None = None, now: int | None = None
    ) -> Release | None:
        """The newest release of ``image`` for ``arch`` (open to ``seed`` at ``now``)."""
        for r in self.of(image):
            if arch not in r.files:
                continue
            if seed is not None and now is not None and not r.is_open(seed, now):
                continue
            return r
        return None

    def with_release(self, release: Release) -> ReleaseIndex:
        """A copy holding ``release`` (replacing one of the same image and version)."""
        rest = [
            r for r in self.releases if (r.image, r.version) != (release.image, release.version)
        ]
        return ReleaseIndex(self.channel, _sorted([*rest, release]))

    def without(self, drop: Iterable[Release]) -> ReleaseIndex:
        gone = {(r.image, r.version) for r in drop}
        return ReleaseIndex(
            self.channel, tuple(r for r in self.releases if (r.image, r.version) not in gone)
        )

    def to_json(self) -> bytes:
        data = {
            "format": INDEX_FORMAT,
            "channel": self.channel,
            "releases": [r.to_dict() for r in self.releases],
        }
        return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ReleaseIndex:
        """Parse a ``releases.json``; a malformed one raises DistbuildError."""
        try:
            raw = json.loads(data)
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"unsupported format {raw.get('format')!r}")
            releases = [
                Release(
                    image=str(r["image"]),
                    version=str(r["version"]),
                    published=parse_iso(r["published"]),
                    waves=tuple(Wave(int(w["after"]), int(w["max_seed"])) for w in r["waves"]),
                    files={
                        str(a): {str(f): str(k) for f, k in fs.items()}
                        for a, fs in r["files"].items()
                    },
                )
                for r in raw["releases"]
            ]
            return cls(str(raw["channel"]), _sorted(releases))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DistbuildError(
                f"unreadable release index ({e})",
                hint="the channel was written by an incompatible distbuild; republish it",
            ) from None


def target_path(image: str, version: str, arch: str, file: str) -> str:
    """The target name of a release file: ``<image>/<version>/<arch>/<file>``."""
    return f"{image}/{version}/{arch}/{file}"


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions naturally: ``1.10`` after ``1.9``, ``2026.11.27.2`` after ``.1``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[^\d.\-+_~]+", version)
    )


def seed_from(text: str) -> int:
    """A stable wave seed in ``[0, MAX_SEED)`` from a node identity (e.g. machine-id)."""
    digest = hashlib.sha256(text.strip().encode()).digest()
    return int.from_bytes(digest[:4], "big") % MAX_SEED


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> int:
    stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp())


def _sorted(releases: Iterable[Release]) -> tuple[Release, ...]:
    return tuple(
        sorted(releases, key=lambda r: (r.image, _Desc(version_key(r.version)), r.version))
    )


class _Desc:
    """Sort wrapper that reverses the order of a key."""

    def __init__(self, key: tuple[tuple[int, int | str], ...]) -> None:
        self.key = key

    def __lt__(self, other: _Desc) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)
