"""What a subscriber sees in a channel, read through a real TUF client.

``describe`` runs python-tuf's ngclient over the channel directory, starting
from the channel's first root (as a node that was installed long ago would),
so everything it reports has passed the same checks a node applies:
signatures, thresholds, expiry, versions, hashes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tuf.api import exceptions

from distbuild.channel.repo import ChannelRepo
from distbuild.channel.trust import local_updater
from distbuild.channel.tufapi import Updater
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import INDEX_TARGET, MAX_SEED, ReleaseIndex, iso


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
        try:
            updater.refresh()
            info = updater.get_targetinfo(INDEX_TARGET)
            index = (
                ReleaseIndex.from_json(Path(updater.download_target(info)).read_bytes())
                if info is not None
                else ReleaseIndex(repo.name)
            )
            latest = []
            for image in index.images():
                arches = sorted({a for r in index.of(image) for a in r.files})
                for a in arches:
                    if arch is not None and a != arch:
                        continue
                    release = index.latest(image, a)
                    assert release is not None
                    targets = []
                    for path in release.target_paths(a):
                        t = updater.get_targetinfo(path)
                        if t is None:
                            raise exceptions.RepositoryError(f"{path} is listed but not signed")
                        targets.append(
                            TargetView(path, t.custom.get("kind", ""), t.hashes["sha256"], t.length)
                        )
                    rollout = tuple(
                        (round(w.max_seed * 100 / MAX_SEED), iso(release.published + w.after))
                        for w in release.waves
                    ) or ((100, iso(release.published)),)
                    latest.append(
                        LatestView(
                            image,
                            a,
                            release.version,
                            iso(release.published),
                            rollout,
                            tuple(targets),
                        )
                    )
        except exceptions.ExpiredMetadataError as e:
            raise DistbuildError(
                f"channel {repo.name}: {e}",
                hint=f"re-sign it: distbuild channel refresh --channel {repo.name}",
            ) from None
        except (exceptions.RepositoryError, exceptions.DownloadError) as e:
            raise DistbuildError(
                f"channel {repo.name} fails TUF verification: {e}",
                hint="restore the channel from a backup, or republish into a new one",
            ) from None
        meta = work / "metadata"
        signed = {
            role: json.loads((meta / f"{role}.json").read_bytes())["signed"]
            for role in ("root", "timestamp", "snapshot", "targets")
        }
    return ChannelView(
        channel=repo.name,
        root_version=int(signed["root"]["version"]),
        timestamp_version=int(signed["timestamp"]["version"]),
        expires={role: str(s["expires"]) for role, s in signed.items()},
        releases={image: [r.version for r in index.of(image)] for image in index.images()},
        totals={image: index.total(image) for image in index.images()},
        latest=tuple(latest),
    )
