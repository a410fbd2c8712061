"""What a subscriber sees in a channel, read through a real TUF client.

``describe`` runs python-tuf's ngclient over the channel directory, starting
from the channel's first root (as a node that was installed long ago would),
so everything it reports has passed the same checks a node applies:
signatures, thresholds, expiry, versions, hashes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tuf.api import exceptions

from distbuild.channel.repo import ChannelRepo
from distbuild.channel.trust import local_updater
from distbuild.channel.tufapi import Updater
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import INDEX_TARGET, MAX_SEED, Release, ReleaseIndex, iso


@dataclass(frozen=True)
class TargetView:
    path: str
    kind: str
    sha256: str
    length: int


@dataclass(frozen=True)
class LatestView:
    """The newest release of one image for one arch."""

    image: str
    arch: str
    version: str
    published: str
    rollout: tuple[tuple[int, str], ...]  # (percent of the fleet, from when)
    targets: tuple[TargetView, ...]


@dataclass(frozen=True)
class ChannelView:
    channel: str
    root_version: int
    timestamp_version: int
    expires: dict[str, str]  # role -> ISO time
    releases: dict[str, list[str]]  # image -> listed versions, newest first
    totals: dict[str, int]  # image -> releases held (listed or not)
    latest: tuple[LatestView, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def open_updater(repo: ChannelRepo, workdir: Path) -> Updater:
    """An ngclient Updater over a local channel, trusting its first root."""
    repo.require()
    if not (repo.metadata / "1.root.json").is_file():
        raise DistbuildError(f"channel {repo.name} has no metadata/1.root.json") from None
    return local_updater(repo.metadata, repo.targets, workdir)


def describe(repo: ChannelRepo, arch: str | None = None) -> ChannelView:
    """Refresh a fresh client over the channel and report its newest releases."""
    with tempfile.TemporaryDirectory(prefix="distbuild-show-") as tmp:
        work = Path(tmp)
        updater = open_updater(repo, work)
        with _tuf_errors(repo.name):
            updater.refresh()
            index = _release_index(updater, repo.name)
            latest = tuple(_latest(updater, index, arch))
        signed = {
            role: json.loads((work / "metadata" / f"{role}.json").read_bytes())["signed"]
            for role in ("root", "timestamp", "snapshot", "targets")
        }
    return ChannelView(
        channel=repo.name,
        root_version=int(signed["root"]["version"]),
        timestamp_version=int(signed["timestamp"]["version"]),
        expires={role: str(s["expires"]) for role, s in signed.items()},
        releases={image: [r.version for r in index.of(image)] for image in index.images()},
        totals={image: index.total(image) for image in index.images()},
        latest=latest,
    )


@contextmanager
def _tuf_errors(channel: str) -> Iterator[None]:
    """python-tuf's refusals as DistbuildErrors that say what to do."""
    try:
        yield
    except exceptions.ExpiredMetadataError as e:
        raise DistbuildError(
            f"channel {channel}: {e}",
            hint=f"re-sign it: distbuild channel refresh --channel {channel}",
        ) from None
    except (exceptions.RepositoryError, exceptions.DownloadError) as e:
        raise DistbuildError(
            f"channel {channel} fails TUF verification: {e}",
            hint="restore the channel from a backup, or republish into a new one",
        ) from None


def _release_index(updater: Updater, channel: str) -> ReleaseIndex:
    """The release index as the client downloaded and verified it (empty if none)."""
    info = updater.get_targetinfo(INDEX_TARGET)
    if info is None:
        return ReleaseIndex(channel)
    return ReleaseIndex.from_json(Path(updater.download_target(info)).read_bytes())


def _latest(updater: Updater, index: ReleaseIndex, arch: str | None) -> Iterator[LatestView]:
    """The newest release per image and arch (only ``arch``, when given)."""
    for image in index.images():
        for a in sorted({a for r in index.of(image) for a in r.arches}):
            if arch is not None and a != arch:
                continue
            release = index.latest(image, a)
            assert release is not None
            yield _latest_view(updater, release, a)


def _latest_view(updater: Updater, release: Release, arch: str) -> LatestView:
    targets = []
    for path in release.target_paths(arch):
        t = updater.get_targetinfo(path)
        if t is None:
            raise exceptions.RepositoryError(f"{path} is listed but not signed")
        targets.append(TargetView(path, t.custom.get("kind", ""), t.hashes["sha256"], t.length))
    rollout = tuple(
        (round(w.max_seed * 100 / MAX_SEED), iso(release.published + w.after))
        for w in release.waves
    ) or ((100, iso(release.published)),)
    return LatestView(
        release.image, arch, release.version, iso(release.published), rollout, tuple(targets)
    )
