"""Channel upkeep: creating, refreshing expiring metadata, rotating root keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import Channel
from distbuild.channel.repo import (
    ChannelRepo,
    Update,
    init_channel,
    list_channels,
    refresh,
    rotate_root,
    utcnow,
)
from distbuild.errors import DistbuildError

ROOT_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Refreshed:
    """The outcome of refreshing one channel."""

    channel: str
    roles: tuple[str, ...]  # re-signed roles (bins are counted, not named)
    root_expires: datetime

    @property
    def summary(self) -> str:
        if not self.roles:
            return "nothing close to expiry"
        bins = sum(1 for r in self.roles if r.startswith("bin-"))
        named = [r for r in self.roles if not r.startswith("bin-")]
        if bins:
            named.append(f"{bins} bins")
        return "re-signed " + ", ".join(named)


def create_channel(repo_root: Path, channel: Channel, keys: KeyStore) -> bool:
    """Create an empty channel repository; False if it exists already."""
    repo = ChannelRepo(repo_root, channel.name)
    with repo.lock():
        if repo.exists():
            return False
        init_channel(repo, keys, channel.expiry)
    return True


def refresh_channel(
    repo_root: Path,
    channel: Channel,
    keys: KeyStore,
    *,
    margin: timedelta | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> Refreshed:
    """Re-sign a channel's metadata that expires within ``margin`` (all with ``force``)."""
    repo = ChannelRepo(repo_root, channel.name)
    repo.require()
    with repo.lock(), Update(repo, keys, channel.expiry, now) as update:
        roles = refresh(update, margin, force)
        root_expires = repo.root().signed.expires
    return Refreshed(channel.name, tuple(roles), root_expires)


def rotate_roots(
    repo_root: Path,
    channels: Mapping[str, Channel],
    keys: KeyStore,
    *,
    now: datetime | None = None,
) -> dict[str, int]:
    """Give every channel under ``repo_root`` a new root listing ``keys``' root keys.

    ``channels`` maps names to definitions (for the root lifetime); every
    channel in the repository must have one. Returns channel -> new root version.
    """
    names = list_channels(repo_root)
    missing = [n for n in names if n not in channels]
    if missing:
        raise DistbuildError(
            f"no definition for channel(s) {', '.join(missing)} in the repository",
            hint="add channels/<name>.yaml for each, or run inside the project that made them",
        )
    now = now or utcnow()
    done = {}
    for name in names:
        repo = ChannelRepo(repo_root, name)
        with repo.lock():
            done[name] = rotate_root(repo, keys, channels[name].expiry, now)
    return done
