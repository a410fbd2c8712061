"""Channel upkeep: creating, refreshing expiring metadata, rotating root keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tuf.api.exceptions import UnsignedMetadataError

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import Channel, Expiry
from distbuild.channel.repo import (
    ChannelRepo,
    Update,
    build_root,
    init_channel,
    list_channels,
    utcnow,
    write_root,
)
from distbuild.channel.trust import ONLINE_SIGNING
from distbuild.channel.tufapi import Root
from distbuild.errors import DistbuildError

ROOT_WARNING = timedelta(days=30)


def refresh(update: Update, margin: timedelta | None = None, force: bool = False) -> list[str]:
    """Re-sign the roles that expire within ``margin`` (default: half their lifetime).

    Returns the roles re-signed; a changed targets role implies snapshot and
    timestamp, a changed snapshot implies timestamp. Nothing is written when
    nothing is close to expiry, so it is safe to run from cron every hour.
    """
    touched = []
    for role in [*update.roles(), "snapshot", "timestamp"]:
        lifetime = update.expiry.of(role)
        window = min(margin, lifetime) if margin is not None else lifetime / 2
        if force or update.expires(role) - update.now <= window:
            update.touch(role)
            touched.append(role)
    update.commit()
    return touched


def rotate_root(
    repo: ChannelRepo, keys: KeyStore, expiry: Expiry, now: datetime | None = None
) -> int:
    """Write root version N+1 listing the key directory's keys; return N+1.

    It is signed by the old root's keys (enough of them to meet its threshold,
    so clients that trust version N accept it) and by the new root keys. The
    keys of the other roles must be those the channel uses already.
    """
    now = now or utcnow()
    old = repo.root()
    new = build_root(keys, now + expiry.root, old.signed.version + 1)
    for role in ("targets", "snapshot", "timestamp"):
        if _role_keys(old.signed, role) != _role_keys(new.signed, role):
            raise DistbuildError(
                f"channel {repo.name} uses other {role} keys than {keys.path}",
                hint="rotate-root replaces root keys only; use the key directory "
                "the channel was created with",
            )
    wanted = set(old.signed.roles["root"].keyids) | set(new.signed.roles["root"].keyids)
    for keyid in sorted(wanted):
        signer = keys.signer_for(keyid)
        if signer is not None:
            new.sign(signer, append=True)
    payload = new.signed_bytes
    try:
        old.signed.verify_delegate("root", payload, new.signatures)
    except UnsignedMetadataError:
        raise DistbuildError(
            f"channel {repo.name}: not enough of its current root keys are in {keys.path} "
            f"(threshold {old.signed.roles['root'].threshold})",
            hint="bring the retired root keys back into the key directory and retry",
        ) from None
    new.signed.verify_delegate("root", payload, new.signatures)
    write_root(repo, new)
    return new.signed.version


def _role_keys(root: Root, role: str) -> tuple[int, frozenset[str]]:
    r = root.roles[role]
    return r.threshold, frozenset(r.keyids)


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
    keys.require_online("refresh")
    repo = ChannelRepo(repo_root, channel.name)
    repo.require()
    with repo.lock(), Update(repo, keys, channel.expiry, now) as update:
        update.check_keys(ONLINE_SIGNING, str(keys.path))
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
