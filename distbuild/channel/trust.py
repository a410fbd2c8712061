"""Gates that keep a channel readable: the right keys, and a client's view before commit.

A change of a channel becomes visible when ``timestamp.json`` is replaced.
Before that, two checks run, so a wrong key directory or a bug cannot leave
every node refusing the channel:

* :func:`check_keys`, before anything is written: the keys at hand are the
  ones the channel's current root names for each role they will sign (and
  the targets role's delegation to the hash bins), in threshold number.
* :func:`verify_as_client`, after the new roles are staged and before the
  new timestamp is swapped in: python-tuf's ngclient, trusting the channel's
  *first* root as a node installed long ago does, refreshes over the local
  files with the new timestamp served from memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from distbuild.channel.tufapi import Root, Signer, TargetFile, Targets, Updater
from distbuild.core.errors import DistbuildError

# What publish, promote and refresh sign: "bins" are the hash-bin roles the
# top-level targets role delegates to (signed with the targets keys).
ONLINE_SIGNING = ("targets", "bins", "snapshot", "timestamp")
# Targets up to this size are downloaded and hashed by the check; larger ones
# (images) were hashed when stored and are only checked for presence and size.
DOWNLOAD_LIMIT = 1 << 20


class Signers(Protocol):
    """Where signers come from: a KeyStore, or anything else with this method."""

    def signers(self, role: str) -> list[Signer]: ...


def short(keyids: Iterable[str]) -> str:
    return ", ".join(sorted(k[:16] for k in keyids)) or "none"


def check_keys(
    channel: str, root: Root, top: Targets, keys: Signers, roles: Iterable[str], where: str
) -> None:
    """Raise unless ``keys`` can sign every role in ``roles`` as ``root`` requires.

    Unlocking the signers also checks each private key matches its public key.
    """
    for role in roles:
        if role == "bins":
            delegations = top.delegations
            succinct = delegations.succinct_roles if delegations is not None else None
            if succinct is None:
                raise DistbuildError(
                    f"channel {channel} has no hash-bin delegation",
                    hint="publish into a fresh channel directory",
                )
            expected, threshold = list(succinct.keyids), succinct.threshold
            have = [s.public_key.keyid for s in keys.signers("targets")]
            what = "the hash bins (delegated by targets)"
        else:
            expected = list(root.roles[role].keyids)
            threshold = root.roles[role].threshold
            have = [s.public_key.keyid for s in keys.signers(role)]
            what = f"the {role} role"
        if len(set(have) & set(expected)) < threshold:
            raise DistbuildError(
                f"channel {channel}: {what} needs {threshold} signature(s) from key(s) "
                f"{short(expected)} (root v{root.version}); {where} has {role if role != 'bins' else 'targets'} "
                f"key(s) {short(have)}",
                hint="use the key directory this channel was made with (or its "
                "'distbuild keys export-online' copy); nothing was changed",
            )


class FileFetcher(FetcherInterface):
    """ngclient's fetcher for ``file://`` URLs; ``staged`` files are served from memory.

    A missing file is an HTTP 404, as a static server would answer.
    """

    def __init__(self, staged: Mapping[Path, bytes] | None = None) -> None:
        self.staged = {p.resolve(): data for p, data in (staged or {}).items()}

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        if path in self.staged:
            return iter([self.staged[path]])
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, IsADirectoryError):
            raise exceptions.DownloadHTTPError(f"not found: {path}", 404) from None
        return _chunks(f)


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := f.read(1 << 16):
            yield chunk
    finally:
        f.close()


def local_updater(
    metadata: Path,
    targets: Path,
    workdir: Path,
    staged: Mapping[Path, bytes] | None = None,
) -> Updater:
    """An ngclient Updater over a local channel, trusting its first root (1.root.json)."""
    bootstrap = (metadata / "1.root.json").read_bytes()
    (workdir / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(workdir / "metadata"),
        metadata_base_url=metadata.resolve().as_uri() + "/",
        target_dir=str(workdir / "targets"),
        target_base_url=targets.resolve().as_uri() + "/",
        fetcher=FileFetcher(staged),
        bootstrap=bootstrap,
    )


def verify_as_client(
    channel: str,
    metadata: Path,
    targets: Path,
    timestamp: bytes,
    *,
    now: datetime,
    expect: Mapping[str, TargetFile | None],
    probes: Iterable[str] = (),
) -> None:
    """Refresh a client over the channel as it will be once ``timestamp`` is in place.

    The client trusts ``1.root.json`` and also holds the current timestamp
    (as a node that polled before does, so rollbacks are caught). Every path
    in ``expect`` must resolve to the given target (None: unlisted), and each
    ``probes`` path makes the client load and check the bin it falls in.
    """
    with tempfile.TemporaryDirectory(prefix="distbuild-verify-") as tmp:
        work = Path(tmp)
        (work / "metadata").mkdir()
        current = metadata / "timestamp.json"
        if current.is_file():
            (work / "metadata" / "timestamp.json").write_bytes(current.read_bytes())
        try:
            updater = local_updater(metadata, targets, work, {current: timestamp})
            # Check expiry at the time the update signs for (``now``), not the clock.
            updater._trusted_set.reference_time = now
            updater.refresh()
            for path in probes:
                updater.get_targetinfo(path)
            for path, want in expect.items():
                _check_target(updater, path, want, work)
        except (exceptions.RepositoryError, exceptions.DownloadError, OSError) as e:
            raise DistbuildError(
                f"channel {channel}: the new metadata fails verification as a client "
                f"would do it ({type(e).__name__}: {e}); nothing was changed",
                hint="check that --keys is the channel's key directory; if it is, "
                "this is a bug in distbuild: report it",
            ) from None


def _check_target(updater: Updater, path: str, want: TargetFile | None, work: Path) -> None:
    got = updater.get_targetinfo(path)
    if want is None:
        if got is not None:
            raise exceptions.RepositoryError(f"{path} is still listed")
        return
    if got is None or got.hashes != want.hashes or got.length != want.length:
        raise exceptions.RepositoryError(f"{path} is not listed as it should be")
    if got.length <= DOWNLOAD_LIMIT:
        updater.download_target(got, str(work / "download"))
