"""The .deb cache: every package is fetched once, by its locked sha256.

A no-change rebuild finds every file here and touches no network. A file
whose bytes do not match the lock is never extracted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from distbuild.core import ui
from distbuild.core.errors import FetchError, LockError
from distbuild.node.deadline import Watchdog
from distbuild.oci import transport
from distbuild.rootfs.lock import LockedPackage

CHUNK = 1 << 20
# Seconds one download may take in all (connect, headers, body), plus its size at MIN_RATE:
# a mirror that trickles its answer is cut off, and the download tried again.
DEADLINE, MIN_RATE = 120.0, 32 * 1024


class NetworkCounter:
    """Counts requests made, so benchmarks can tell whether a build went online."""

    requests = 0
    bytes = 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Transient(Exception):
    """A failed download worth another try (a busy server, a cut-off body)."""


def land(
    dog: Watchdog,
    dest: Path,
    sha256: str,
    copy: Callable[[BinaryIO], str],
    mismatch: Callable[[str, int], Exception],
) -> None:
    """Write a download through ``copy`` (which returns its sha256) into a temporary
    file beside ``dest``, and rename it to ``dest`` only when the body came whole
    within ``dog``'s deadline and hashes to ``sha256``; otherwise nothing is left.

    A cut-off body is :class:`Transient`; a whole one with another sha256 is
    ``mismatch(its sha256, its size)``.
    """
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            digest = copy(f)
            size = f.tell()
        if dog.fired:  # cut off: whatever arrived is not the whole file
            raise Transient(f"no complete answer within {dog.seconds:.0f} s")
        if digest != sha256:
            raise mismatch(digest, size)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Gone(Exception):
    """The mirror answered 404 for a locked package."""


class DebCache:
    def __init__(self, cache: Path) -> None:
        self.dir = cache / "debs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, pkg: LockedPackage) -> Path:
        return self.dir / f"{pkg.sha256}.deb"

    def verified(self, pkg: LockedPackage) -> Path:
        """The cached file of ``pkg`` after checking its bytes against the lock."""
        path = self.path(pkg)
        got = sha256_file(path)
        if got != pkg.sha256:
            path.unlink(missing_ok=True)
            raise LockError(
                f"{pkg.name} {pkg.version}: cached .deb has sha256 {got}, the lock says {pkg.sha256}",
                hint="the damaged cache entry was removed; run the build again to fetch it anew",
            )
        return path

    def ensure(
        self,
        packages: list[LockedPackage],
        session: requests.Session | None = None,
        mirror: str | None = None,
    ) -> None:
        """Fetch the packages not cached yet, by their lock's pool path and sha256.

        With ``mirror`` (``--mirror``, e.g. a snapshot archive URL to rebuild an
        old release) each package is asked of that mirror first, then of the
        mirror its lock names; the sha256 check makes either as good.
        """
        missing = [p for p in packages if not self.path(p).exists()]
        if not missing:
            ui.debug(f"all {len(packages)} packages are cached")
            return
        total = sum(p.size for p in missing)
        ui.note(f"fetching {len(missing)} packages ({total / 1048576:.1f} MiB)")
        session = session or transport.session()
        with ui.progress("download", total) as bar, ThreadPoolExecutor(4) as pool:
            for _ in pool.map(lambda p: self._fetch(session, p, bar, mirror), missing):
                pass

    def _fetch(
        self, session: requests.Session, pkg: LockedPackage, bar: ui.Progress, mirror: str | None
    ) -> None:
        bases = [pkg.source]
        if mirror and mirror.rstrip("/") != pkg.source:
            bases.insert(0, mirror.rstrip("/"))
        for base in bases[:-1]:
            try:
                return self._download(session, pkg, bar, base)
            except _Gone:
                ui.note(f"{pkg.name} {pkg.version} is not on {base}; trying {bases[-1]}")
        try:
            self._download(session, pkg, bar, bases[-1])
        except _Gone:
            raise LockError(
                f"{pkg.name} {pkg.version} is no longer on the mirror ({pkg.filename})",
                hint="the archive moved on: run 'distbuild lock' to resolve current versions, or "
                "rebuild with --mirror set to a snapshot archive URL of the lock's date",
            ) from None

    def _download(
        self, session: requests.Session, pkg: LockedPackage, bar: ui.Progress, base: str
    ) -> None:
        try:
            self._attempt(session, pkg, bar, f"{base}/{pkg.filename}")
        except (requests.ConnectionError, requests.Timeout, Transient) as e:
            raise FetchError(
                f"could not download {pkg.name} from {base}: "
                f"{e if isinstance(e, Transient) else e.__class__.__name__}",
                hint="check the network and the mirror (--mirror or DISTBUILD_MIRROR)",
            ) from None

    @retry(
        retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, Transient)),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def _attempt(
        self, session: requests.Session, pkg: LockedPackage, bar: ui.Progress, url: str
    ) -> None:
        """One try, within DEADLINE plus the package's size at MIN_RATE."""
        NetworkCounter.requests += 1
        with transport.watched(DEADLINE + pkg.size / MIN_RATE, Transient) as dog:
            self._get(session, pkg, bar, url, dog)
        if dog.fired:
            raise Transient(f"no complete answer within {dog.seconds:.0f} s")

    def _get(
        self,
        session: requests.Session,
        pkg: LockedPackage,
        bar: ui.Progress,
        url: str,
        dog: Watchdog,
    ) -> None:
        with session.get(url, stream=True, timeout=30) as r:
            if r.status_code == 404:
                raise _Gone()
            if r.status_code >= 500:
                raise Transient(f"HTTP {r.status_code}")
            if r.status_code != 200:
                raise FetchError(f"{url}: HTTP {r.status_code}")
            land(
                dog,
                self.path(pkg),
                pkg.sha256,
                lambda f: _receive(r, f, pkg, bar),
                lambda digest, _: LockError(
                    f"{pkg.name} {pkg.version}: sha256 mismatch: the mirror's .deb is "
                    f"{digest}, the lock says {pkg.sha256}",
                    hint="the archive changed under the lock; if that is expected, run "
                    "'distbuild lock' to re-resolve, otherwise suspect the mirror",
                ),
            )


def _receive(r: requests.Response, f: BinaryIO, pkg: LockedPackage, bar: ui.Progress) -> str:
    """Write the body into ``f``, at most the locked size; return its sha256."""
    h = hashlib.sha256()
    size = 0
    for chunk in r.iter_content(CHUNK):
        size += len(chunk)
        if size > pkg.size:
            raise LockError(f"{pkg.name}: the mirror sent more than {pkg.size} bytes")
        h.update(chunk)
        f.write(chunk)
        bar.update(len(chunk))
    NetworkCounter.bytes += size
    return h.hexdigest()
