"""One channel as a static TUF repository, written with python-tuf's Metadata API.

Layout of ``<repo>/<channel>/`` (consistent snapshots)::

    metadata/1.root.json … N.root.json, root.json   root history; root.json = newest
    metadata/timestamp.json                          the only file a reader polls
    metadata/<n>.snapshot.json
    metadata/<n>.targets.json                        delegates every path to the bins
    metadata/<n>.bin-<xx>.json                       hash-bin roles holding the targets
    targets/<dir>/<sha256>.<basename>                target files
    .lock                                            serialises writers (flock)

Targets live in succinct hash bins (TAP 15): a path's bin is fixed by the hash
of its name, so a publish re-signs only the few bins its new targets land in,
plus snapshot and timestamp. Its cost stays flat however many releases the
channel holds; a flat targets.json would be re-signed whole on every publish.

Writers change a channel only through :class:`Update`, under
:meth:`ChannelRepo.lock`: target files first, then the changed targets roles,
then snapshot, then timestamp.json, each file written atomically. Until the
new timestamp.json is in place readers see the previous state, and every
file it leads them to already exists. Before it is swapped in, a TUF client
checks the staged state (:mod:`distbuild.channel.trust`); if it would refuse
it, the staged files are removed and nothing visible changes.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.serialization.json import JSONSerializer

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import ROLES, Expiry
from distbuild.channel.targetfiles import collect_retired, prune_empty_dirs, store_file
from distbuild.channel.trust import Signers, check_keys, verify_as_client
from distbuild.channel.tufapi import (
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signer,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic

BIN_PREFIX = "bin"
BIN_BITS = 8  # 256 bins: a few targets each even with thousands of releases
# How long superseded metadata and dropped target files stay for readers mid-poll.
GRACE = timedelta(hours=1)
_JSON = JSONSerializer(compact=True)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class ChannelRepo:
    """The directory of one channel; reads metadata, hands out the writer lock."""

    def __init__(self, repo: Path, name: str) -> None:
        self.name = name
        self.path = repo / name
        self.metadata = self.path / "metadata"
        self.targets = self.path / "targets"

    def exists(self) -> bool:
        return (self.metadata / "timestamp.json").is_file()

    def require(self) -> None:
        """Raise a DistbuildError if the channel has not been created yet."""
        if not self.exists():
            raise DistbuildError(
                f"channel {self.name} has no repository at {self.path}",
                hint=f"publish a build into it first: distbuild publish BUILD --channel {self.name}",
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the channel's writer lock (blocking); re-read metadata inside it."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def discard(self) -> None:
        """Remove the channel's metadata and targets (not its lock); under the lock."""
        shutil.rmtree(self.metadata, ignore_errors=True)
        shutil.rmtree(self.targets, ignore_errors=True)

    def read(self, role: str, version: int | None = None) -> Metadata[Any]:
        """Parse ``[<version>.]<role>.json`` from the metadata directory."""
        name = f"{version}.{role}.json" if version is not None else f"{role}.json"
        try:
            return Metadata.from_bytes((self.metadata / name).read_bytes())
        except FileNotFoundError:
            raise DistbuildError(
                f"channel {self.name}: metadata/{name} is missing",
                hint="the repository is damaged; restore it from a backup",
            ) from None
        except Exception as e:
            raise DistbuildError(f"channel {self.name}: metadata/{name} is unreadable ({e})") from e

    def root(self) -> Metadata[Root]:
        return self.read("root")

    def target_file(self, path: str, sha256: str) -> Path:
        """Where the file of target ``path`` with ``sha256`` lives (consistent snapshots)."""
        directory, _, base = path.rpartition("/")
        return self.targets / directory / f"{sha256}.{base}"


def list_channels(repo: Path) -> list[str]:
    """The channels that have a repository under ``repo``."""
    if not repo.is_dir():
        return []
    return sorted(p.parent.parent.name for p in repo.glob("*/metadata/root.json"))


def sha256_of(target: TargetFile) -> str:
    return str(target.hashes["sha256"])


# -- creating a channel and its root ---------------------------------------------


def build_root(keys: KeyStore, expires: datetime, version: int = 1) -> Metadata[Root]:
    """Unsigned root metadata listing the key directory's current keys and thresholds."""
    root = Root(version=version, expires=expires, consistent_snapshot=True)
    for role in ROLES:
        root.roles[role] = Role([], keys.roles[role].threshold)
        for key in keys.public_keys(role):
            root.add_key(key, role)
    return Metadata(root)


def write_root(repo: ChannelRepo, md: Metadata[Root]) -> None:
    """Write ``<v>.root.json`` and then ``root.json`` (the newest root)."""
    data = md.to_bytes(_JSON)
    write_atomic(repo.metadata / f"{md.signed.version}.root.json", data)
    write_atomic(repo.metadata / "root.json", data)


def init_channel(
    repo: ChannelRepo,
    keys: KeyStore,
    expiry: Expiry,
    now: datetime | None = None,
    bin_bits: int = BIN_BITS,
) -> None:
    """Create an empty channel: root v1, targets delegating to empty bins, snapshot, timestamp.

    Call under ``repo.lock()``; does nothing if the channel exists.
    """
    if repo.exists():
        return
    now = now or utcnow()
    # Unlock every key first so that a missing one leaves nothing behind.
    signers = {role: keys.signers(role) for role in ROLES}
    root = build_root(keys, now + expiry.root)
    _sign(root, signers["root"])
    write_root(repo, root)

    targets_keys = keys.roles["targets"]
    bins = SuccinctRoles(list(targets_keys.keyids), targets_keys.threshold, bin_bits, BIN_PREFIX)
    delegations = Delegations(
        keys={k.keyid: k for k in keys.public_keys("targets")}, roles=None, succinct_roles=bins
    )
    top = Metadata(Targets(expires=now + expiry.targets, delegations=delegations))
    snapshot = Metadata(Snapshot(expires=now + expiry.snapshot))
    for name in [*bins.get_roles(), "targets"]:
        md = top if name == "targets" else Metadata(Targets(expires=now + expiry.targets))
        snapshot.signed.meta[f"{name}.json"] = _write_signed(repo, name, md, signers["targets"])
    timestamp = Metadata(Timestamp(expires=now + expiry.timestamp))
    timestamp.signed.snapshot_meta = _write_signed(repo, "snapshot", snapshot, signers["snapshot"])
    _sign(timestamp, signers["timestamp"])
    data = timestamp.to_bytes(_JSON)
    try:  # as for every change: a client must accept it before it exists
        verify_as_client(repo.name, repo.metadata, repo.targets, data, now=now, expect={})
    except BaseException:
        repo.discard()
        raise
    write_atomic(repo.metadata / "timestamp.json", data)


def _sign(md: Metadata[Any], signers: list[Signer]) -> None:
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)


def _write_signed(
    repo: ChannelRepo, role: str, md: Metadata[Any], signers: list[Signer]
) -> MetaFile:
    """Sign and write ``<version>.<role>.json``; return its meta (version, length, hash)."""
    _sign(md, signers)
    data = md.to_bytes(_JSON)
    write_atomic(repo.metadata / f"{md.signed.version}.{role}.json", data)
    return MetaFile.from_data(md.signed.version, data, ["sha256"])


# -- changing a channel ------------------------------------------------------------


class Update:
    """One change of a channel, committed in TUF order by :meth:`commit`.

    Create it under ``repo.lock()``: it reads the current timestamp, snapshot
    and top-level targets, and loads bins as they are touched.
    """

    def __init__(
        self, repo: ChannelRepo, keys: Signers, expiry: Expiry, now: datetime | None = None
    ) -> None:
        repo.require()
        self.repo = repo
        self.keys = keys
        self.expiry = expiry
        self.now = now or utcnow()
        self.timestamp: Metadata[Timestamp] = repo.read("timestamp")
        self.snapshot: Metadata[Snapshot] = repo.read(
            "snapshot", self.timestamp.signed.snapshot_meta.version
        )
        self._roles: dict[str, Metadata[Targets]] = {}
        self.top: Metadata[Targets] = self.load("targets")
        delegations = self.top.signed.delegations
        if delegations is None or delegations.succinct_roles is None:
            raise DistbuildError(
                f"channel {repo.name} was not written by distbuild (no hash-bin delegation)",
                hint="publish into a fresh channel directory",
            )
        self.bins: SuccinctRoles = delegations.succinct_roles
        self._dirty: set[str] = set()
        self._snapshot_dirty = False
        self._timestamp_dirty = False
        self._delete: list[Path] = []
        self._created: list[Path] = []
        self._expect: dict[str, TargetFile | None] = {}  # path -> listed as (None: unlisted)

    def __enter__(self) -> Update:
        return self

    def check_keys(self, roles: tuple[str, ...], where: str) -> None:
        """Raise unless the update's keys sign ``roles`` as the channel's current root requires."""
        check_keys(
            self.repo.name, self.repo.root().signed, self.top.signed, self.keys, roles, where
        )

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        if kind is not None:
            self.abort()

    def abort(self) -> None:
        """Forget the changes and remove the target files this update stored."""
        for path in self._created:
            path.unlink(missing_ok=True)
            prune_empty_dirs(path.parent, self.repo.targets)
        self._created.clear()
        self._dirty.clear()
        self._delete.clear()
        self._expect.clear()

    # reading

    def load(self, role: str) -> Metadata[Targets]:
        """The current metadata of a targets role (top-level or a bin)."""
        if role in self._roles:
            return self._roles[role]
        meta = self.snapshot.signed.meta.get(f"{role}.json")
        if meta is None:
            raise DistbuildError(f"channel {self.repo.name}: {role} is not in the snapshot")
        md: Metadata[Targets] = self.repo.read(role, meta.version)
        self._roles[role] = md
        return md

    def role_of(self, path: str) -> str:
        return self.bins.get_role_for_target(path)

    def get(self, path: str) -> TargetFile | None:
        """The current target info of ``path``, or None."""
        return self.load(self.role_of(path)).signed.targets.get(path)

    # changing

    def add(self, target: TargetFile, source: Path, *, link: bool = False) -> None:
        """Store ``source`` as the file of ``target`` (verified), then list it.

        With ``link`` the file is hard-linked when possible (files inside one
        repository are immutable, so channels can share them).
        """
        sha256 = sha256_of(target)
        dest = self.repo.target_file(target.path, sha256)
        if not (dest.is_file() and dest.stat().st_size == target.length):
            store_file(source, dest, sha256, target.length, link=link)
            self._created.append(dest)
        self._list(target)

    def add_bytes(self, path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
        """Store ``data`` as target ``path`` (a document the publisher writes itself)."""
        target = TargetFile.from_data(path, data, ["sha256"])
        target.unrecognized_fields["custom"] = custom
        dest = self.repo.target_file(path, sha256_of(target))
        if not dest.is_file():
            write_atomic(dest, data)
            self._created.append(dest)
        self._list(target)
        return target

    def _list(self, target: TargetFile) -> None:
        role = self.role_of(target.path)
        self.load(role).signed.targets[target.path] = target
        self._dirty.add(role)
        self._expect[target.path] = target

    def remove(self, path: str) -> TargetFile | None:
        """Unlist ``path``; its file is deleted a grace period after the commit."""
        role = self.role_of(path)
        target = self.load(role).signed.targets.pop(path, None)
        if target is not None:
            self._dirty.add(role)
            self._expect[path] = None
            self.retire(self.repo.target_file(path, sha256_of(target)))
        return target

    def touch(self, role: str) -> None:
        """Re-sign ``role`` with a new version and expiry even if unchanged."""
        if role == "timestamp":
            self._timestamp_dirty = True
        elif role == "snapshot":
            self._snapshot_dirty = True
        else:
            self.load(role)
            self._dirty.add(role)

    @property
    def changed(self) -> bool:
        return bool(self._dirty or self._snapshot_dirty or self._timestamp_dirty)

    def commit(self) -> None:
        """Write changed targets roles, then snapshot, then timestamp; retire what they replaced.

        The new timestamp is verified by a client over the staged files before
        it replaces the current one; on failure the staged files are removed.
        """
        if not self.changed:
            return
        superseded: list[Path] = []
        staged: list[Path] = []
        try:
            if self._dirty or self._snapshot_dirty:
                self._stage(superseded, staged)
            self.timestamp.signed.version += 1
            self.timestamp.signed.expires = self.now + self.expiry.timestamp
            _sign(self.timestamp, self.keys.signers("timestamp"))
            timestamp = self.timestamp.to_bytes(_JSON)
            self._verify(timestamp)
        except BaseException:
            for path in staged:
                path.unlink(missing_ok=True)
            raise
        write_atomic(self.repo.metadata / "timestamp.json", timestamp)
        self._dirty.clear()
        self._created.clear()
        self._expect.clear()
        self._snapshot_dirty = self._timestamp_dirty = False
        retired = [*superseded, *self._delete]
        collect_retired(
            self.repo.path, self.repo.targets, self.now, GRACE, retired, self._referenced
        )
        self._delete.clear()

    def _stage(self, superseded: list[Path], staged: list[Path]) -> None:
        """Write the changed targets roles and the snapshot (not yet referenced)."""
        targets_signers = self.keys.signers("targets") if self._dirty else []
        meta = self.snapshot.signed.meta
        superseded.append(self.repo.metadata / f"{self.snapshot.signed.version}.snapshot.json")
        for role in sorted(self._dirty):
            md = self._roles[role]
            superseded.append(self.repo.metadata / f"{md.signed.version}.{role}.json")
            md.signed.version += 1
            md.signed.expires = self.now + self.expiry.of(role)
            staged.append(self.repo.metadata / f"{md.signed.version}.{role}.json")
            meta[f"{role}.json"] = _write_signed(self.repo, role, md, targets_signers)
        self.snapshot.signed.version += 1
        self.snapshot.signed.expires = self.now + self.expiry.snapshot
        staged.append(self.repo.metadata / f"{self.snapshot.signed.version}.snapshot.json")
        self.timestamp.signed.snapshot_meta = _write_signed(
            self.repo, "snapshot", self.snapshot, self.keys.signers("snapshot")
        )

    def _verify(self, timestamp: bytes) -> None:
        """Check the staged state as a client would see it with ``timestamp`` in place."""
        for path, target in self._expect.items():
            if target is None:
                continue
            file = self.repo.target_file(path, sha256_of(target))
            if not file.is_file() or file.stat().st_size != target.length:
                raise DistbuildError(
                    f"channel {self.repo.name}: target file of {path} is missing or damaged",
                    hint="nothing was changed; retry, and check the disk",
                )
        probes = [self._probe(role) for role in sorted(self._dirty) if role != "targets"]
        verify_as_client(
            self.repo.name,
            self.repo.metadata,
            self.repo.targets,
            timestamp,
            now=self.now,
            expect=self._expect,
            probes=probes,
        )

    def _probe(self, role: str) -> str:
        """A target path in bin ``role``, so that a client loads and checks that bin."""
        listed = self._roles[role].signed.targets
        if listed:
            return next(iter(listed))
        n = 0
        while self.role_of(f"probe-{n}") != role:
            n += 1
        return f"probe-{n}"

    def retire(self, path: Path) -> None:
        """Delete ``path`` (a file this update made unreferenced) after the grace period."""
        self._delete.append(path)

    def _referenced(self, path: Path) -> bool:
        """Whether the current state names ``path`` (it may have been re-added)."""
        if path.is_relative_to(self.repo.targets):
            rel = path.relative_to(self.repo.targets)
            sha, _, base = rel.name.partition(".")
            name = str(rel.with_name(base))
            target = self.get(name)
            return target is not None and sha256_of(target) == sha
        version, _, rest = path.name.partition(".")
        if not version.isdigit():
            return True  # not a file this code retires: leave it
        role = rest.removesuffix(".json")
        if role == "snapshot":
            return int(version) == self.snapshot.signed.version
        meta = self.snapshot.signed.meta.get(rest)
        return meta is not None and meta.version == int(version)

    # expiry

    def roles(self) -> list[str]:
        """Every targets role of the channel: the top-level one and each bin."""
        return ["targets", *self.bins.get_roles()]

    def expires(self, role: str) -> datetime:
        if role == "timestamp":
            return self.timestamp.signed.expires
        if role == "snapshot":
            return self.snapshot.signed.expires
        return self.load(role).signed.expires
