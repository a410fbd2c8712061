"""An image's extensions (files Debian lacks): fetched once, verified, installed.

Each file is downloaded into the cache under its pinned sha256, and kept
only if its bytes hash to that pin; so a second build, or another image
pinning the same file, does not go online. A download has a wall-clock
deadline (connect and headers within :data:`DEADLINE`, the body at
:data:`MIN_RATE` at least) and a size cap. The cached file is hashed again
as it is copied into the root: nothing unverified lands there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from distbuild.core import ui
from distbuild.core.errors import FetchError, RecipeError
from distbuild.model.extensions import Extension
from distbuild.model.image import ImageDef
from distbuild.node.deadline import Watchdog
from distbuild.oci import transport
from distbuild.rootfs.fetch import CHUNK, NetworkCounter, Transient, land
from distbuild.rootfs.rootpath import RootDir, RootPathError

MAX_SIZE = 512 << 20  # a kubelet is ~80 MB, k3s ~70 MB
DEADLINE = 60.0  # seconds for connecting and the headers; then the body at MIN_RATE
MIN_RATE = 256 * 1024  # bytes a second (a body without a length is given MAX_SIZE's time)
ATTEMPTS = 3


def store(cache: Path) -> Path:
    """The extension cache: one file per sha256."""
    return cache / "extensions"


def ensure(cache: Path, image: ImageDef, session: requests.Session | None = None) -> None:
    """Fetch every extension of ``image`` not cached yet; a wrong sha256 fails here."""
    directory = store(cache)
    missing = [e for e in image.extensions if not (directory / e.sha256).is_file()]
    if not missing:
        return
    directory.mkdir(parents=True, exist_ok=True)
    session = session or transport.session()
    for ext in missing:
        ui.note(f"fetching {ext.path} from {ext.url}")
        _fetch(session, ext, directory)


def _fetch(session: requests.Session, ext: Extension, directory: Path) -> None:
    @retry(
        retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout, Transient)),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def attempt() -> None:
        NetworkCounter.requests += 1
        with transport.watched(DEADLINE, Transient) as dog:
            _receive(session, ext, dog, directory)

    try:
        attempt()
    except (requests.RequestException, Transient) as e:
        reason = e if isinstance(e, Transient) else e.__class__.__name__
        raise FetchError(
            f"{ext.where}: {ext.key}: could not fetch {ext.url} ({ATTEMPTS} tries): {reason}",
            hint="check the network and that the URL serves the file; "
            "a later build retries (nothing was written)",
        ) from None


def _receive(session: requests.Session, ext: Extension, dog: Watchdog, directory: Path) -> None:
    """One download into a temporary file, hashed on the way, renamed only if it matches."""
    with session.get(ext.url, stream=True, timeout=30) as r:
        if r.status_code >= 500 or r.status_code == 429:
            raise Transient(f"HTTP {r.status_code}")
        if r.status_code != 200:
            raise _refused(ext, f"the server answered HTTP {r.status_code}")
        length = r.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_SIZE:
            raise _refused(ext, f"the file is {length} bytes, more than {MAX_SIZE} allowed")
        dog.extend(DEADLINE + (int(length) if length.isdigit() else MAX_SIZE) / MIN_RATE)
        land(
            dog,
            directory / ext.sha256,
            ext.sha256,
            lambda f: _copy(r, f, ext),
            lambda digest, size: FetchError(
                f"{ext.where}: {ext.key}: sha256 mismatch: {ext.url} served {size} bytes "
                f"with sha256 {digest}, the definition pins {ext.sha256}",
                hint="if the file changed on purpose, pin the new sha256 "
                "('sha256sum FILE'); otherwise suspect the server. Nothing was installed",
            ),
        )


def _copy(r: requests.Response, f: IO[bytes], ext: Extension) -> str:
    h, size = hashlib.sha256(), 0
    for chunk in r.iter_content(CHUNK):
        size += len(chunk)
        if size > MAX_SIZE:
            raise _refused(ext, f"the server sent more than {MAX_SIZE} bytes")
        h.update(chunk)
        f.write(chunk)
    NetworkCounter.bytes += size
    return h.hexdigest()


def _refused(ext: Extension, why: str) -> FetchError:
    return FetchError(
        f"{ext.where}: {ext.key}: cannot fetch {ext.url}: {why}",
        hint="fix the extension's url (or its sha256) in the image definition",
    )


def install(root: Path, image: ImageDef, cache: Path) -> None:
    """Copy each extension from the cache into the root, hashing it again first."""
    tree = RootDir(root)
    for ext in image.extensions:
        path = store(cache) / ext.sha256
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise FetchError(
                f"{ext.path}: {path} left the cache during the build",
                hint="run the build again: it fetches the file anew",
            ) from None
        with f:
            h = hashlib.sha256()
            while chunk := f.read(CHUNK):
                h.update(chunk)
            if h.hexdigest() != ext.sha256:
                path.unlink(missing_ok=True)
                raise FetchError(
                    f"{ext.path}: the cached file {path} does not match its sha256",
                    hint="the damaged cache entry was removed; run the build again",
                )
            f.seek(0)
            try:
                tree.write_file(ext.path, f, ext.mode)
            except RootPathError as e:
                raise RecipeError(e.message, e.hint, where=ext.where, key=ext.key) from None
        ui.debug(f"extension {ext.path}: {ext.sha256[:12]}…, mode {ext.mode:04o}")
