"""Channel upkeep: creating, refreshing expiring metadata, rotating root keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from distbuild.channel.trust import ONLINE_SIGNING, short
from distbuild.channel.tufapi import Metadata, Root
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic

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


def pending_root(repo: ChannelRepo) -> Metadata[Root] | None:
    """Root N+1 written by an interrupted rotation while root.json is still N, if valid.

    Clients look for N+1.root.json whatever root.json says, so a valid one may
    already be trusted: it must be kept and finished, never replaced. One that
    fails verification was refused by every client and may be replaced.
    """
    old = repo.root()
    path = repo.metadata / f"{old.signed.version + 1}.root.json"
    try:
        md: Metadata[Root] = Metadata.from_bytes(path.read_bytes())
        if md.signed.type != "root" or md.signed.version != old.signed.version + 1:
            return None
        old.signed.verify_delegate("root", md.signed_bytes, md.signatures)
        md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
    except Exception:  # missing, unparsable or not signed as clients require
        return None
    return md


def finish_pending(repo: ChannelRepo) -> bool:
    """Make a valid pending N+1 root the newest (root.json); True if there was one."""
    found = False
    while (md := pending_root(repo)) is not None:
        written = repo.metadata / f"{md.signed.version}.root.json"
        write_atomic(repo.metadata / "root.json", written.read_bytes())
        found = True
    return found


def rotate_root(
    repo: ChannelRepo, keys: KeyStore, expiry: Expiry, now: datetime | None = None
) -> int:
    """Write root version N+1 listing the key directory's keys; return the newest version.

    It is signed by the old root's keys (enough of them to meet its threshold,
    so clients that trust version N accept it) and by the new root keys. The
    keys of the other roles must be those the channel uses already. A root
    N+1 left by an interrupted run is finished instead; if it lists the key
    directory's root keys already, that is the whole rotation.
    """
    now = now or utcnow()
    check_rotation_keys(repo.name, (pending_root(repo) or repo.root()).signed, keys)
    if finish_pending(repo) and _root_keys(repo.root().signed) == _store_root_keys(keys):
        return repo.root().signed.version
    old = repo.root()
    new = build_root(keys, now + expiry.root, old.signed.version + 1)
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


def check_rotation_keys(channel: str, root: Root, keys: KeyStore) -> None:
    """Raise unless ``keys`` is this channel's key set: same online keys, its root keys held."""
    for role in ("targets", "snapshot", "timestamp"):
        want = _root_keys(root, role)
        have = (keys.roles[role].threshold, frozenset(keys.roles[role].keyids))
        if want != have:
            raise DistbuildError(
                f"channel {channel}: its root v{root.version} lists {role} key(s) "
                f"{short(want[1])} (threshold {want[0]}); {keys.path} has {short(have[1])} "
                f"(threshold {have[0]})",
                hint="rotate-root replaces root keys only; use the key directory "
                "the channel was created with. Nothing was changed",
            )
    root_role = root.roles["root"]
    held = [k for k in root_role.keyids if keys.signer_for(k) is not None]
    if len(held) < root_role.threshold:
        raise DistbuildError(
            f"channel {channel}: not enough of its current root keys are in {keys.path}: "
            f"root v{root.version} needs {root_role.threshold} signature(s) from root key(s) "
            f"{short(root_role.keyids)}; the directory holds {short(held)}",
            hint="bring those root keys (current or retired) into the key directory and "
            "retry. Nothing was changed",
        )


def _root_keys(root: Root, role: str = "root") -> tuple[int, frozenset[str]]:
    r = root.roles[role]
    return r.threshold, frozenset(r.keyids)


def _store_root_keys(keys: KeyStore) -> tuple[int, frozenset[str]]:
    return keys.roles["root"].threshold, frozenset(keys.roles["root"].keyids)


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


def unfinished_rotations(
    repo_root: Path, channels: Mapping[str, Channel], keys: KeyStore
) -> list[str]:
    """Check every channel's keys against ``keys``; return those a rotation has not finished.

    A channel is unfinished when it has a pending next root, or its root does
    not list the key directory's root keys: a run stopped between generating
    new keys and writing every channel's root. Writes nothing.
    """
    names = list_channels(repo_root)
    missing = [n for n in names if n not in channels]
    if missing:
        raise DistbuildError(
            f"no definition for channel(s) {', '.join(missing)} in the repository",
            hint="add channels/<name>.yaml for each, or run inside the project that made them",
        )
    unfinished = []
    for name in names:
        repo = ChannelRepo(repo_root, name)
        pending = pending_root(repo)
        current = pending or repo.root()
        check_rotation_keys(name, current.signed, keys)
        if pending is not None or _root_keys(current.signed) != _store_root_keys(keys):
            unfinished.append(name)
    return unfinished


def rotate_roots(
    repo_root: Path,
    channels: Mapping[str, Channel],
    keys: KeyStore,
    *,
    only: Sequence[str] | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Give every channel under ``repo_root`` (or ``only`` those) a root listing ``keys``' root keys.

    ``channels`` maps names to definitions (for the root lifetime); every
    channel in the repository must have one. Every channel is checked before
    any is written. Returns channel -> newest root version.
    """
    unfinished_rotations(repo_root, channels, keys)
    now = now or utcnow()
    done = {}
    for name in list_channels(repo_root) if only is None else only:
        repo = ChannelRepo(repo_root, name)
        with repo.lock():
            done[name] = rotate_root(repo, keys, channels[name].expiry, now)
    return done
