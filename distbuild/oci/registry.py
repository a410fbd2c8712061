"""A small client for OCI distribution registries (distribution-spec v1.1).

One class, :class:`RegistryClient`, speaks to one repository of one registry:
it checks and uploads blobs, reads and writes manifests and lists tags. It
authenticates the way Docker does (a ``WWW-Authenticate`` challenge answered
with Basic credentials or a bearer token from the realm's token endpoint) and
retries whatever may succeed a second time (5xx, 429, dropped connections)
with exponential backoff. A blob upload that fails midway is started again
from scratch: a new upload session, every byte sent again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import requests
import tenacity
import urllib3

from distbuild.core import ui
from distbuild.core.errors import DistbuildError, RegistryError
from distbuild.oci import transport
from distbuild.oci.auth import Credentials, docker_config_path, parse_challenge
from distbuild.oci.layout import INDEX, MANIFEST
from distbuild.oci.reference import is_loopback

T = TypeVar("T")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (INDEX, MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
DEFAULT_CHUNK = 5 * 1024 * 1024
USER_AGENT = "distbuild"
# Per request: seconds in all (+ its upload at MIN_RATE), and the largest answer read.
DEADLINE, MIN_RATE, ANSWER_LIMIT = 300.0, 64 * 1024, 16 << 20


class _Transient(Exception):
    """A failure worth trying again: 5xx, 429, a dropped connection."""

    def __init__(
        self, message: str, retry_after: float | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable  # no answer at all, rather than an error answer


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return min(float(resp.headers.get("Retry-After", "")), 30.0)
    except ValueError:
        return None


def _registry_message(resp: requests.Response) -> str:
    """The registry's own words from an error body, or the HTTP reason."""
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return f"{resp.status_code} {resp.reason}" + (f" ({text})" if text else "")


@dataclass
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


class RegistryClient:
    """One repository of one registry, with auth, retries and upload sessions."""

    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        chunk_size: int = DEFAULT_CHUNK,
        actions: str = "pull,push",
        timeout: float = 120.0,
        deadline: float = DEADLINE,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.credentials = credentials
        scheme = (
            "http" if (plain_http if plain_http is not None else is_loopback(registry)) else "https"
        )
        self.base = f"{scheme}://{registry}"
        self.attempts = retries + 1
        self.backoff = backoff
        self.chunk_size = chunk_size
        self.actions = actions
        self.timeout = timeout
        self.deadline = deadline
        self.retried = 0  # requests repeated after a transient failure
        self.bytes_sent = 0  # blob bytes handed to the wire, failed attempts included
        self._session = transport.session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._authorization: str | None = None
        self._tokens: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -----------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        url = f"{self.base}/v2/{self.repository}/blobs/{digest}"
        resp = self._retrying(
            f"checking blob {_short(digest)}", lambda: self._send("HEAD", url, ok=(200, 404))
        )
        return resp.status_code == 200

    def upload_blob(self, source: Path | bytes, digest: str, size: int) -> None:
        """Upload a blob (a file or bytes); monolithic when small, in chunks when large."""
        first = True

        def attempt() -> None:
            nonlocal first
            # After a failure the blob may have landed anyway (the answer got lost).
            if not first and self.blob_exists(digest):
                return
            first = False
            self._upload_once(source, digest, size)

        self._retrying(f"uploading blob {_short(digest)}", attempt)

    def put_manifest(self, data: bytes, media_type: str, ref: str) -> str:
        """Store a manifest under a tag or its digest; return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        url = f"{self.base}/v2/{self.repository}/manifests/{ref}"
        resp = self._retrying(
            f"putting manifest {_short(ref) if ref.startswith('sha256:') else ref}",
            lambda: self._send(
                "PUT", url, data=data, headers={"Content-Type": media_type}, ok=(201,)
            ),
        )
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise RegistryError(
                f"{self.registry} stored manifest {ref} as {stored}, not {digest}",
                hint="the registry rewrote the manifest; it does not keep OCI content byte for byte",
            )
        return digest

    def manifest_digest(self, ref: str) -> str | None:
        """The digest a tag (or digest) resolves to, or None when it does not exist."""
        resp = self._ask_manifest("HEAD", f"checking manifest {ref}", ref)
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest") or None

    def get_manifest(self, ref: str) -> Manifest:
        resp = self._ask_manifest("GET", f"getting manifest {ref}", ref)
        if resp.status_code == 404:
            raise RegistryError(f"{self.registry}/{self.repository}: no manifest {ref}")
        data = resp.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{self.registry} answered manifest {ref} with content {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0] or json.loads(data).get(
            "mediaType", ""
        )
        return Manifest(data, media_type, digest)

    def _ask_manifest(self, method: str, what: str, ref: str) -> requests.Response:
        """HEAD or GET a manifest in any of the types we read; a 404 is an answer."""
        url = f"{self.base}/v2/{self.repository}/manifests/{ref}"
        return self._retrying(
            what,
            lambda: self._send(
                method, url, headers={"Accept": ", ".join(MANIFEST_TYPES)}, ok=(200, 404)
            ),
        )

    def tags(self) -> list[str]:
        url = f"{self.base}/v2/{self.repository}/tags/list"
        resp = self._retrying("listing tags", lambda: self._send("GET", url, ok=(200, 404)))
        if resp.status_code == 404:
            return []
        return sorted(resp.json().get("tags") or [])

    # -- uploads -------------------------------------------------------------

    def _upload_once(self, source: Path | bytes, digest: str, size: int) -> None:
        start = f"{self.base}/v2/{self.repository}/blobs/uploads/"
        location = self._location(
            self._send("POST", start, headers={"Content-Length": "0"}, ok=(202,))
        )
        hasher = hashlib.sha256()
        opened = source.open("rb") if isinstance(source, Path) else io.BytesIO(source)
        with opened as f, ui.progress(f"{_short(digest)}", size) as bar:
            if size <= self.chunk_size:
                data = f.read()
                hasher.update(data)
                self._check(source, digest, size, hasher, len(data))
                self.bytes_sent += len(data)
                self._send(
                    "PUT",
                    _with_digest(location, digest),
                    data=data,
                    ok=(201,),
                    headers={"Content-Type": "application/octet-stream"},
                )
                bar.update(len(data))
                return
            offset = 0
            for chunk in _chunks(f, self.chunk_size):
                hasher.update(chunk)
                end = offset + len(chunk) - 1
                self.bytes_sent += len(chunk)
                resp = self._send(
                    "PATCH",
                    location,
                    data=chunk,
                    ok=(202,),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                    },
                )
                bar.update(len(chunk))
                offset = end + 1
                location = self._location(resp)
            self._check(source, digest, size, hasher, offset)
            self._send(
                "PUT", _with_digest(location, digest), headers={"Content-Length": "0"}, ok=(201,)
            )

    def _check(self, source: Path | bytes, digest: str, size: int, hasher: Any, read: int) -> None:
        if read != size or "sha256:" + hasher.hexdigest() != digest:
            what = source if isinstance(source, Path) else "blob content"
            raise DistbuildError(
                f"{what} does not match its digest {digest} (size {read}, expected {size})",
                hint="the OCI layout is damaged; build the image again"
                if isinstance(source, Path)
                else None,
            )

    def _location(self, resp: requests.Response) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{self.registry} started an upload without a Location header")
        return urllib.parse.urljoin(resp.url, location)

    # -- requests, auth, retries ------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        exp = tenacity.wait_exponential(multiplier=self.backoff, max=30)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = exc.retry_after if isinstance(exc, _Transient) else None
            return max(exp(state), after or 0.0)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.retried += 1
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0.0
            ui.note(f"{self.registry}: {what}: {exc}; trying again in {sleep:.1f}s")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except _Transient as e:
            times = f"{self.attempts} time{'s' if self.attempts > 1 else ''}"
            if e.unreachable:
                raise RegistryError(
                    f"cannot reach {self.registry}: {what} failed {times}, last: {e}",
                    hint=f"check that a registry answers at {self.base}; pushing again skips "
                    "what is already there",
                ) from None
            raise RegistryError(
                f"{self.registry}: {what} failed {times}, last: {e}",
                hint="the registry keeps failing; check that it is up and has room, then push "
                "again (what is already there is skipped) or raise --retries",
            ) from None

    def _send(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...],
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        for authorized in (False, True):
            hdrs = dict(headers or {})
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            try:
                resp = transport.request(
                    self._session,
                    method,
                    url,
                    self.deadline + len(data or b"") / MIN_RATE,
                    ANSWER_LIMIT,
                    data=data,
                    headers=hdrs,
                    timeout=(10, self.timeout),
                    allow_redirects=method in ("GET", "HEAD"),
                )
            except transport.DeadlineExceeded as e:
                raise _Transient(f"{method} {_path(url)}: {e}; cut off") from None
            except requests.exceptions.SSLError as e:
                raise RegistryError(
                    f"TLS with {self.registry} failed: {_reason(e)}",
                    hint="use --plain-http if the registry speaks plain HTTP, or point "
                    "REQUESTS_CA_BUNDLE at the CA that signed its certificate",
                ) from None
            except (requests.RequestException, OSError) as e:
                raise _Transient(
                    f"{method} {_path(url)}: connection failed ({_reason(e)})",
                    unreachable=_unreachable(e),
                ) from None
            if resp.status_code == 401 and not authorized:
                self._authorize(resp)
                continue
            break
        if resp.status_code in ok:
            return resp
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Transient(
                f"{method} {_path(url)}: {_registry_message(resp)}", _retry_after(resp)
            )
        if resp.status_code == 401:
            raise self._auth_failed()
        if resp.status_code == 403:
            raise RegistryError(
                f"{self.registry} denied {method} on {self.repository}: {_registry_message(resp)}",
                hint=f"the account{self._who()} may not {self.actions.replace(',', '/')} {self.repository}",
            )
        raise RegistryError(f"{self.registry}: {method} {_path(url)}: {_registry_message(resp)}")

    def _who(self) -> str:
        return f" {self.credentials.username!r}" if self.credentials else ""

    def _auth_failed(self) -> RegistryError:
        if self.credentials is None:
            return RegistryError(
                f"{self.registry} requires authentication",
                hint="set DISTBUILD_REGISTRY_USERNAME and DISTBUILD_REGISTRY_PASSWORD, or log in "
                f"with 'docker login {self.registry}' (read from {docker_config_path()})",
            )
        return RegistryError(
            f"authentication failed for {self.registry} as {self.credentials.username!r}",
            hint=f"check the credentials (from {self.credentials.source or 'the caller'}): "
            "DISTBUILD_REGISTRY_USERNAME/DISTBUILD_REGISTRY_PASSWORD, or 'docker login "
            f"{self.registry}'",
        )

    def _authorize(self, resp: requests.Response) -> None:
        """Answer a 401's challenge: Basic credentials or a bearer token."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                raise self._auth_failed()
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
        elif scheme == "bearer" and params.get("realm"):
            self._authorization = "Bearer " + self._token(params)
        else:
            raise RegistryError(
                f"{self.registry} asked for an authentication this client does not speak "
                f"({resp.headers.get('WWW-Authenticate') or 'no WWW-Authenticate header'})"
            )

    def _token(self, params: dict[str, str]) -> str:
        scopes = [f"repository:{self.repository}:{self.actions}"]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        key = (params["realm"], " ".join(scopes))
        if key in self._tokens and self._authorization != "Bearer " + self._tokens[key]:
            return self._tokens[key]  # cached and not the one just refused
        query: list[tuple[str, str]] = [("scope", s) for s in scopes]
        if params.get("service"):
            query.insert(0, ("service", params["service"]))
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None

        def fetch() -> requests.Response:
            try:
                r = transport.request(
                    self._session,
                    "GET",
                    params["realm"],
                    self.deadline,
                    ANSWER_LIMIT,
                    params=query,
                    auth=auth,
                    timeout=(10, 60),
                )
            except transport.DeadlineExceeded as e:
                raise _Transient(f"token endpoint {params['realm']}: {e}; cut off") from None
            except (requests.RequestException, OSError) as e:
                raise _Transient(f"token endpoint {params['realm']}: {_reason(e)}") from None
            if r.status_code >= 500 or r.status_code == 429:
                raise _Transient(f"token endpoint {params['realm']}: {_registry_message(r)}")
            return r

        r = self._retrying("getting a token", fetch)
        if r.status_code in (401, 403):
            raise self._auth_failed()
        try:
            body = r.json()
            token = str(body.get("token") or body["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise RegistryError(
                f"token endpoint {params['realm']} answered {_registry_message(r)} without a token"
            ) from None
        self._tokens[key] = token
        return token


def _chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _with_digest(location: str, digest: str) -> str:
    parts = urllib.parse.urlsplit(location)
    query = [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("digest", digest)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _short(digest: str) -> str:
    return digest.split(":")[-1][:12]


def _path(url: str) -> str:
    """A URL's path with digests shortened, for messages."""
    path = urllib.parse.urlsplit(url).path
    return re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]{52}", r"sha256:\1…", path)


def _causes(e: BaseException) -> list[BaseException]:
    """A requests error and what it wraps: urllib3's error, then the OS error."""
    chain = [e]
    for _ in range(8):  # bounded against odd chains
        inner = chain[-1]
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in inner.args if isinstance(a, BaseException)), None)
        if nested is None:
            break
        chain.append(nested)
    return chain


def _unreachable(e: BaseException) -> bool:
    """No connection was made at all (refused, no route, connect timeout)."""
    return any(
        isinstance(c, urllib3.exceptions.NewConnectionError | requests.ConnectTimeout)
        for c in _causes(e)
    )


def _reason(e: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, e.g. "[Errno 104] Connection reset"."""
    inner = _causes(e)[-1]
    text = str(inner)
    if "[Errno" in text:
        text = text[text.index("[Errno") :]
    return (text or type(inner).__name__)[:160]
