"""The node's view of its channel: TUF-verified metadata and the release to install.

python-tuf's ngclient refreshes the channel's metadata from the root baked into
the image (or a newer one it verified since), checking signatures, thresholds,
expiry and versions. The channel's ``releases.json`` (a TUF target too) lists
the releases; :func:`select` picks the one for this node, and
:meth:`ChannelClient.target` returns each file's signed length, hash and
custom metadata. The payload bytes themselves are streamed by
:mod:`distbuild.node.install` against those values, because ngclient's
``download_target`` would first copy a whole root image into a file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from distbuild.core.errors import DistbuildError
from distbuild.core.releases import INDEX_TARGET, Release, ReleaseIndex, version_key
from distbuild.node.http import Body, Http, HttpStatusError, TooSlow, TransferError

log = logging.getLogger("distbuild.node")

# Roles of a root release's files: the artifact kinds of the build's ``root``
# output (distbuild/disk/outputs.py), with file names as a fallback.
ROOT_IMAGE = "root"
KERNEL = "kernel"
INITRD = "initrd"
BOOT = "boot"
# The node's board's device tree: the release's ``dtb`` file for (arch, board),
# target ``<image>/<version>/<arch>/<board>/<file>`` (distbuild.core.releases).
DTB = "dtb"
_NAMES = {
    ROOT_IMAGE: ("root.img",),
    KERNEL: ("linux", "vmlinuz", "zImage", "Image"),
    INITRD: ("initrd", "initrd.img", "initramfs.img"),
    BOOT: ("boot.json",),
}

# Largest metadata ngclient may fetch through us; it enforces its own limits too.
_METADATA_LIMIT = 1 << 40
# The size a metadata file without a Content-Length is given time for (ngclient's
# own limits are 512 kB for root.json and 5 MB for targets.json).
_METADATA_EXPECT = 32 << 20


class Refused(DistbuildError):
    """An update the node will not install; the reason goes to status and the log."""

    exit_code = 8


class _Fetcher(FetcherInterface):
    """ngclient's fetcher over :class:`Http` (timeouts, deadline, throughput floor,
    byte count). A server error (5xx, 408, 429) or a failed connection is tried
    again with exponential back-off, :attr:`Limits.tries` times in all, within
    the round; a 404 (ngclient probing for a newer root) or a cut-off is not."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.tries = 0  # requests made, retries included (tests read it)

    def _fetch(self, url: str) -> Iterator[bytes]:
        limits = self.http.limits
        attempts = max(1, limits.tries)
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(
                multiplier=limits.retry_wait, max=max(limits.retry_wait, limits.retry_wait_max)
            ),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=lambda s: log.warning(
                "%s; trying again (%d of %d)",
                s.outcome.exception() if s.outcome else "failed",
                s.attempt_number + 1,
                attempts,
            ),
            reraise=True,
        )
        try:
            body = retrying(self._open, url)
        except HttpStatusError as e:
            if e.retryable and attempts > 1:
                e.message += f" (tried {attempts} times)"
            raise exceptions.DownloadHTTPError(e.message, e.status) from e
        except TransferError as e:
            if e.retryable and not isinstance(e, TooSlow) and attempts > 1:
                e.message += f" (tried {attempts} times)"
            raise
        return self.http.chunks(body, _METADATA_LIMIT)

    def _open(self, url: str) -> Body:
        self.tries += 1
        return self.http.open(url, expect=_METADATA_EXPECT)


def _worth_retrying(e: BaseException) -> bool:
    """A server error or a failed connection; not a refusal, a 404 or a cut-off."""
    return isinstance(e, TransferError) and e.retryable and not isinstance(e, TooSlow)


@dataclass(frozen=True)
class Target:
    """One signed file of the channel: what its bytes must be, and where they are."""

    path: str
    length: int
    sha256: str
    custom: dict[str, Any]
    url: str


@dataclass(frozen=True)
class Candidate:
    """A release chosen for this node, with its files' signed target info."""

    release: Release
    arch: str
    files: dict[str, Target]  # role -> target

    @property
    def version(self) -> str:
        return self.release.version


@dataclass(frozen=True)
class Selection:
    """What :func:`select` decided: a release to install, or none and why."""

    release: Release | None
    reason: str
    downgrade: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def select(
    index: ReleaseIndex,
    *,
    image: str,
    arch: str,
    current: str,
    seed: int,
    now: int,
    failed: set[str],
    allow_downgrade: bool = False,
) -> Selection:
    """The newest release of ``image`` for ``arch`` this node may install now.

    Skips versions that failed here and releases whose rollout wave has not
    reached ``seed`` yet (an older open release may still be chosen, as in
    Bottlerocket). Never older than ``current`` unless ``allow_downgrade``.
    """
    notes: list[str] = []
    releases = [r for r in index.of(image) if arch in r.files]
    if not releases:
        return Selection(None, f"channel {index.channel} has no {image} release for {arch}")
    for r in releases:
        if r.version in failed:
            notes.append(f"{r.version} failed here before; not trying it again")
            continue
        if not r.is_open(seed, now):
            wait = r.opens_at(seed) - now
            notes.append(f"{r.version} reaches this node's wave (seed {seed}) in {wait} s")
            continue
        order = version_key(r.version), version_key(current)
        if r.version == current or order[0] == order[1]:
            return Selection(None, f"up to date ({current})", notes=tuple(notes))
        if order[0] > order[1]:
            return Selection(r, f"{r.version} is newer than {current}", notes=tuple(notes))
        if allow_downgrade:
            return Selection(r, f"downgrading {current} to {r.version}", True, tuple(notes))
        return Selection(
            None,
            f"refusing {r.version}: older than the running {current} (pass --allow-downgrade)",
            notes=tuple(notes),
        )
    return Selection(None, "; ".join(notes) or "nothing to install", notes=tuple(notes))


def file_roles(release: Release, arch: str) -> dict[str, str]:
    """role -> file name of a root release for ``arch`` (missing roles left out).

    A role is the one file of that artifact kind; failing that, a known name.
    """
    files = release.files.get(arch, {})
    out: dict[str, str] = {}
    for role, names in _NAMES.items():
        of_kind = sorted(name for name, kind in files.items() if kind == role)
        if len(of_kind) == 1:
            out[role] = of_kind[0]
            continue
        for name in names:
            if name in files:
                out[role] = name
                break
    return out


class ChannelClient:
    """A TUF client over one channel, trusting the node's root.json."""

    def __init__(
        self, base_url: str, channel: str, metadata_dir: Path, trust_anchor: Path, http: Http
    ) -> None:
        base = base_url.rstrip("/")
        self.channel = channel
        self.metadata_url = f"{base}/{channel}/metadata/"
        self.targets_url = f"{base}/{channel}/targets/"
        self.metadata_dir = metadata_dir
        self.trust_anchor = trust_anchor
        self.http = http
        self._updater: Updater | None = None

    def _bootstrap(self) -> bytes:
        """The trusted root: the newer of the baked anchor and the one verified since."""
        try:
            baked = self.trust_anchor.read_bytes()
        except FileNotFoundError:
            raise DistbuildError(
                f"no trust anchor at {self.trust_anchor}",
                hint="the image must be built with the channel's root.json "
                "(distbuild image --channel-url …)",
            ) from None
        cached_path = self.metadata_dir / "root.json"
        try:
            cached = cached_path.read_bytes()
        except FileNotFoundError:
            return baked
        if _root_version(cached) >= _root_version(baked):
            return cached
        return baked

    def refresh(self) -> ReleaseIndex:
        """Refresh the metadata (root → timestamp → snapshot → targets) and read the index."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        with _tuf_errors(self.channel):
            updater = Updater(
                metadata_dir=str(self.metadata_dir),
                metadata_base_url=self.metadata_url,
                target_dir=str(self.metadata_dir.parent / "targets"),
                target_base_url=self.targets_url,
                fetcher=_Fetcher(self.http),
                bootstrap=self._bootstrap(),
            )
            updater.refresh()
            self._updater = updater
            info = updater.get_targetinfo(INDEX_TARGET)
            if info is None:
                return ReleaseIndex(self.channel)
            cached = updater.find_cached_target(info)
            path = cached or updater.download_target(info)
            return ReleaseIndex.from_json(Path(path).read_bytes())

    def target(self, path: str) -> Target:
        """A target's signed info; a target the metadata does not list is refused."""
        if self._updater is None:
            raise DistbuildError("refresh the channel before asking for targets")
        with _tuf_errors(self.channel):
            info = self._updater.get_targetinfo(path)
        if info is None:
            raise Refused(f"channel {self.channel} lists {path} but does not sign it")
        sha256 = info.hashes.get("sha256")
        if not sha256:
            raise Refused(f"{path} has no sha256 in the channel's metadata")
        return Target(
            path, int(info.length), str(sha256), dict(info.custom), self._url(path, sha256)
        )

    def _url(self, path: str, sha256: str) -> str:
        # Consistent snapshots: the file is stored as <dir>/<sha256>.<name>.
        directory, sep, name = path.rpartition("/")
        if self._consistent():
            name = f"{sha256}.{name}"
        return f"{self.targets_url}{directory}{sep}{name}"

    def _consistent(self) -> bool:
        try:
            root = json.loads((self.metadata_dir / "root.json").read_bytes())
            return bool(root["signed"].get("consistent_snapshot", False))
        except (OSError, ValueError, KeyError):
            return True

    def candidate(self, release: Release, arch: str, board: str | None = None) -> Candidate:
        """The signed target info of every file a slot needs from ``release``.

        With ``board``, that board's device tree too, if the release has one
        for it; a board without one boots as before (no DTB in the slot).
        """
        roles = file_roles(release, arch)
        missing = [r for r in (ROOT_IMAGE, KERNEL, INITRD, BOOT) if r not in roles]
        if missing:
            raise Refused(
                f"{release.image} {release.version} for {arch} lacks its "
                f"{', '.join(missing)} file(s); it is not an A/B root release",
                hint="publish a build whose image has the 'root' output",
            )
        files = {role: self.target(release.target_path(arch, name)) for role, name in roles.items()}
        dtb = release.board_target(arch, board, DTB) if board is not None else None
        if dtb is not None:
            files[DTB] = self.target(dtb)
        return Candidate(release, arch, files)


def _root_version(blob: bytes) -> int:
    try:
        return int(json.loads(blob)["signed"]["version"])
    except (ValueError, KeyError, TypeError):
        return 0


# python-tuf's refusals, the more specific first (the first two are RepositoryErrors):
# what the node says, given the channel, the error and its kind, and what to do next.
_REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (
        exceptions.ExpiredMetadataError,
        "channel {ch}: expired metadata ({error}); refusing to trust it",
        "the publisher must re-sign: distbuild channel refresh; check the node's clock too",
    ),
    (
        exceptions.BadVersionNumberError,
        "channel {ch}: metadata version went back ({error}): a rollback; refused",
        "the server offers older metadata than this node has seen",
    ),
    (
        exceptions.RepositoryError,
        "channel {ch} fails TUF verification: {kind}: {error}",
        "the channel or the server is compromised or damaged",
    ),
    (
        exceptions.DownloadLengthMismatchError,
        "channel {ch}: the server sent more metadata than allowed ({error}); refused",
        "the server or something between it and the node is misbehaving",
    ),
)


class _tuf_errors:
    """Turn python-tuf's exceptions into errors a person can act on."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: Any
    ) -> None:
        if value is None or isinstance(value, DistbuildError):
            return
        ch = self.channel
        for kind_of, message, hint in _REFUSALS:
            if isinstance(value, kind_of):
                text = message.format(ch=ch, error=value, kind=type(value).__name__)
                raise Refused(text, hint=hint) from None
        if isinstance(value, exceptions.DownloadError):
            cause = value.__cause__ or value.__context__
            text = str(cause) if isinstance(cause, TransferError) else str(value)
            raise TransferError(f"channel {ch}: {text}") from None
        if isinstance(value, OSError):
            raise DistbuildError(f"channel {ch}: local metadata: {value}") from None


def now_epoch() -> int:
    return int(time.time())
