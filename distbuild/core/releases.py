"""The release index of a channel (``releases.json``) and rollout waves.

A TUF client cannot list targets, so every channel carries one extra target,
``releases.json``: for each image, the releases the channel holds, the files
of each release per arch, when it was published and its rollout waves. A node
fetches it through TUF (so it is verified like any target), picks the newest
release for its image and arch whose wave has come for its seed, and then
fetches that release's targets by name (``<image>/<version>/<arch>/<file>``).

Files made for one board (a board's disk image and its bmap, its device tree)
are targets ``<image>/<version>/<arch>/<board>/<file>`` with the custom
metadata ``board`` besides ``image``, ``version``, ``arch`` and ``kind``. The
index lists them apart from the arch's own files, under ``boards``::

    {"format": 1, "channel": "stable", "totals": {"node": 1},
     "releases": [{
       "image": "node", "version": "2.0.0", "published": "2026-11-30T18:00:00Z",
       "waves": [],
       "files": {"armv7": {"root.img": "root", "zImage": "kernel",
                           "initrd.img": "initrd", "boot.json": "boot"}},
       "boards": {"armv7": {
         "orangepi-pc-qemu": {"disk.img": "disk", "disk.img.bmap": "disk-bmap",
                              "board.dtb": "dtb"},
         "qemu": {"disk.img": "disk", "disk.img.bmap": "disk-bmap"}}}}]}

so ``armv7/orangepi-pc-qemu/board.dtb`` of that release is the target
``node/2.0.0/armv7/orangepi-pc-qemu/board.dtb``. A reader finds a board's file
by kind with :meth:`Release.board_target` (``dtb`` for the node updater,
``disk`` and ``disk-bmap`` for ``distbuild flash``) and the newest release
that has one with :meth:`ReleaseIndex.latest_for_board`.

``boards`` is an addition to format 1, not a format 2: readers that predate
it ignore the key (they read only the keys they know), so nodes already in
the field keep updating from a channel that also serves board files, exactly
as before; a format bump would make every one of them refuse the index and
never update again. ``boards`` is left out when a release has none, so a
channel without boards writes the same bytes as before.

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
from typing import Any

from distbuild.core import names
from distbuild.core.errors import DistbuildError
from distbuild.core.names import check_name

INDEX_TARGET = "releases.json"
INDEX_KIND = "releases"
INDEX_FORMAT = 1
MAX_SEED = 2048
# Releases per image listed by a channel that keeps everything (keep: 0).
WINDOW = 20


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
    # arch -> board -> file basename -> artifact kind: the files made for one board
    boards: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    @property
    def arches(self) -> list[str]:
        return sorted(set(self.files) | set(self.boards))

    def target_path(self, arch: str, file: str, board: str | None = None) -> str:
        """The TUF target name of one file of this release (of ``board``, if given)."""
        return target_path(self.image, self.version, arch, file, board)

    def target_paths(self, arch: str | None = None) -> list[str]:
        """Every target name of this release, board files included (of one arch, if given)."""
        paths = [
            self.target_path(a, f)
            for a in sorted(self.files)
            if arch is None or a == arch
            for f in sorted(self.files[a])
        ]
        for a in sorted(self.boards):
            if arch is None or a == arch:
                for b in sorted(self.boards[a]):
                    paths += [self.target_path(a, f, b) for f in sorted(self.boards[a][b])]
        return paths

    def board_names(self, arch: str | None = None) -> list[str]:
        """The boards this release has files for (of one arch, if given)."""
        return sorted({b for a, bs in self.boards.items() if arch in (None, a) for b in bs})

    def board_target(self, arch: str, board: str, kind: str) -> str | None:
        """The target name of ``board``'s file of ``kind`` for ``arch``, None if it has none.

        One file per kind and board: a release listing two is refused.
        """
        found = sorted(f for f, k in self.boards.get(arch, {}).get(board, {}).items() if k == kind)
        if len(found) > 1:
            raise IndexNameError(
                f"{self.image} {self.version} lists {len(found)} {kind} files for board "
                f"{board} ({arch}): {', '.join(found)}",
                hint="a release has at most one file of each kind per board; republish it",
            )
        return self.target_path(arch, found[0], board) if found else None

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

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> Release:
        """The inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError if malformed.

        Names (image, version, arches, files, kinds) become paths and target
        names, and the index may come from a hostile server: a name outside
        the grammar raises :class:`IndexNameError`.
        """
        return cls(
            image=_name(r["image"], names.IMAGE),
            version=_name(r["version"], names.VERSION),
            published=parse_iso(r["published"]),
            waves=tuple(Wave(int(w["after"]), int(w["max_seed"])) for w in r["waves"]),
            files={_name(a, names.ARCH): _files(fs) for a, fs in r["files"].items()},
            boards={
                _name(a, names.ARCH): {_name(b, names.BOARD): _files(fs) for b, fs in bs.items()}
                for a, bs in r.get("boards", {}).items()
            },
        )

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "image": self.image,
            "version": self.version,
            "published": iso(self.published),
            "waves": [{"after": w.after, "max_seed": w.max_seed} for w in self.waves],
            "files": {a: dict(fs) for a, fs in self.files.items()},  # to_json sorts keys
        }
        if self.boards:
            out["boards"] = {
                a: {b: dict(fs) for b, fs in bs.items()} for a, bs in self.boards.items()
            }
        return out


@dataclass(frozen=True)
class ReleaseIndex:
    """The releases a channel lists, newest version first within each image.

    A channel with ``keep: N`` lists the N releases it keeps; one that keeps
    everything lists only the newest :data:`WINDOW` per image (older ones stay
    signed targets, fetchable by name), so the index a node downloads stays
    small however long the history. ``totals`` counts every release held.
    """

    channel: str
    releases: tuple[Release, ...] = ()
    totals: Mapping[str, int] = field(default_factory=dict)

    def images(self) -> list[str]:
        return sorted({r.image for r in self.releases} | set(self.totals))

    def of(self, image: str) -> list[Release]:
        """The listed releases of ``image``, newest version first."""
        return [r for r in self.releases if r.image == image]

    def total(self, image: str) -> int:
        """How many releases of ``image`` the channel holds (listed or not)."""
        return max(self.totals.get(image, 0), len(self.of(image)))

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
            if arch not in r.arches:
                continue
            if seed is not None and now is not None and not r.is_open(seed, now):
                continue
            return r
        return None

    def latest_for_board(
        self, image: str, arch: str, board: str, kind: str
    ) -> tuple[Release, str] | None:
        """The newest release of ``image`` with a ``kind`` file for ``board`` on
        ``arch``, and that file's target name; None if no listed release has one."""
        for r in self.of(image):
            path = r.board_target(arch, board, kind)
            if path is not None:
                return r, path
        return None

    def with_release(self, release: Release) -> ReleaseIndex:
        """A copy that lists ``release`` (a new one: counted in the image's total)."""
        known = self.find(release.image, release.version) is not None
        rest = [
            r for r in self.releases if (r.image, r.version) != (release.image, release.version)
        ]
        totals = dict(self.totals)
        totals[release.image] = self.total(release.image) + (0 if known else 1)
        # Insert in place (the list is sorted already): a new release is usually
        # the newest, so this compares one version, not the whole history.
        key = version_key(release.version)
        at = len(rest)
        for i, r in enumerate(rest):
            if r.image > release.image or (
                r.image == release.image and version_key(r.version) < key
            ):
                at = i
                break
        return ReleaseIndex(self.channel, (*rest[:at], release, *rest[at:]), totals)

    def without(self, drop: Iterable[Release], *, held: bool = False) -> ReleaseIndex:
        """A copy that no longer lists ``drop``; ``held`` if the channel still has them."""
        gone = {(r.image, r.version) for r in drop}
        totals = dict(self.totals)
        if not held:
            for image, _ in gone:
                totals[image] = self.total(image) - 1
        kept = tuple(r for r in self.releases if (r.image, r.version) not in gone)
        return ReleaseIndex(self.channel, kept, totals)

    def to_json(self) -> bytes:
        data = {
            "format": INDEX_FORMAT,
            "channel": self.channel,
            "releases": [r.to_dict() for r in self.releases],
            "totals": {image: self.total(image) for image in self.images()},
        }
        return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ReleaseIndex:
        """Parse a ``releases.json``; a malformed one raises DistbuildError."""
        try:
            raw = json.loads(data)
            if raw.get("format") != INDEX_FORMAT:
                raise ValueError(f"unsupported format {raw.get('format')!r}")
            releases = [Release.from_dict(r) for r in raw["releases"]]
            totals = {_name(k, names.IMAGE): int(v) for k, v in raw.get("totals", {}).items()}
            return cls(_name(raw["channel"], names.CHANNEL), _sorted(releases), totals)
        except (
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as e:
            raise DistbuildError(
                f"unreadable release index ({e})",
                hint="the channel was written by an incompatible distbuild; republish it",
            ) from None


class IndexNameError(DistbuildError):
    """A release index or a target names something outside the grammar of names."""


def target_path(image: str, version: str, arch: str, file: str, board: str | None = None) -> str:
    """The target name of a release file: ``<image>/<version>/<arch>/<file>``, or
    ``<image>/<version>/<arch>/<board>/<file>`` for a file made for one board.

    Each part must be a name (:mod:`distbuild.core.names`): a bad one is refused,
    never rewritten, so no target leaves its release's directory.
    """
    hint = (
        "a target name is <image>/<version>/<arch>[/<board>]/<file>, each part a name: "
        + names.GRAMMAR
    )
    parts = [(image, names.IMAGE), (version, names.VERSION), (arch, names.ARCH)]
    if board is not None:
        parts.append((board, names.BOARD))
    for value, what in (*parts, (file, names.FILE)):
        check_name(value, what, error=IndexNameError, where="target name", hint=hint)
    return "/".join(value for value, _ in parts) + f"/{file}"


def _files(files: Mapping[str, str]) -> dict[str, str]:
    """A ``{file: kind}`` of the index, every name checked."""
    return {_name(f, names.FILE): _name(k, names.KIND) for f, k in files.items()}


def _name(value: object, what: str) -> str:
    return check_name(
        value,
        what,
        error=IndexNameError,
        where=INDEX_TARGET,
        hint="the channel lists a name distbuild never publishes; the index is refused",
    )


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
    """By image, then newest version first."""
    by_image: dict[str, list[Release]] = {}
    for r in releases:
        by_image.setdefault(r.image, []).append(r)
    out: list[Release] = []
    for image in sorted(by_image):
        out.extend(sorted(by_image[image], key=lambda r: version_key(r.version), reverse=True))
    return tuple(out)
