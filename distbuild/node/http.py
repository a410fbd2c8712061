"""HTTP for the node: streamed bodies with Range, read timeouts, a throughput floor
and a deadline for every request.

Standard library only (``urllib.request``: proxies from the environment, TLS
against the system's CA store, redirects). The payload is read with
``read1`` so a server that trickles bytes gives control back after every
packet and the throughput floor can cut it off; a read timeout ends a
server that goes silent. Neither bounds the headers (one byte every few
seconds passes both), so every request also has a wall-clock deadline
(:mod:`distbuild.node.deadline`): its headers must arrive within
:attr:`Limits.deadline`, and its body within that plus what the throughput
floor allows for the body's length. Every body byte received is counted in
:attr:`Http.received` (resume tests and benchmarks read it).
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distbuild import __version__
from distbuild.core.errors import FetchError
from distbuild.node.deadline import Watchdog, current, watching

CHUNK = 1 << 20
"""Upper bound of one read; memory use stays at a few of these."""


class TransferError(FetchError):
    """A download failed. ``retryable``: trying again (from where it stopped) may work."""

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = True) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


class HttpStatusError(TransferError):
    """The server answered with an HTTP error status."""

    def __init__(self, url: str, status: int) -> None:
        # 4xx other than 408/429 will not change by asking again.
        retryable = status >= 500 or status in (408, 429)
        super().__init__(f"{url}: HTTP {status}", retryable=retryable)
        self.status = status


class TooSlow(TransferError):
    """The server sent less than the throughput floor (a trickle, or a stall)."""


@dataclass(frozen=True)
class Limits:
    """When to give up on a server: silent for ``read_timeout`` seconds, slower
    than ``min_rate`` bytes/s over a ``rate_window``-second window, or no headers
    within ``deadline`` seconds of the request (the body gets that plus the time
    the floor allows for its length: see :meth:`body_deadline`)."""

    read_timeout: float = 30.0
    min_rate: int = 16 * 1024
    rate_window: float = 60.0
    deadline: float = 120.0
    tries: int = 5  # metadata answered 5xx (or unreachable) is asked again, this often
    retry_wait: float = 2.0  # first back-off between those tries; doubles up to ...
    retry_wait_max: float = 30.0

    def body_deadline(self, length: int) -> float:
        """Seconds from the request's start by which a ``length``-byte body must be in:
        a server that keeps to the throughput floor always makes it."""
        return self.deadline + self.rate_window + length / max(1, self.min_rate)


class RateGuard:
    """Raise when fewer than ``min_rate`` bytes/s arrive over a window (a trickling server)."""

    def __init__(self, limits: Limits, url: str) -> None:
        self.limits = limits
        self.url = url
        self.start = time.monotonic()
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n
        elapsed = time.monotonic() - self.start
        if elapsed < self.limits.rate_window:
            return
        rate = self.count / elapsed
        if rate < self.limits.min_rate:
            raise TooSlow(
                f"{self.url}: server too slow ({rate:.0f} B/s over {elapsed:.0f} s, "
                f"floor {self.limits.min_rate} B/s); cut off"
            )
        self.start = time.monotonic()
        self.count = 0


@dataclass
class Body:
    """An open response body: where it starts in the file and how long it says it is."""

    url: str
    response: http.client.HTTPResponse
    start: int  # offset of the first byte in the whole file
    length: int | None  # Content-Length, if the server sent one
    total: int | None  # the whole file's size, from Content-Range, if any
    watchdog: Watchdog | None = None  # cuts the request off at its deadline

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
        self.response.close()

    def cut_off(self) -> bool:
        """Whether the deadline passed (a read that failed or ended was cut off by it)."""
        return self.watchdog is not None and self.watchdog.fired


class _Watched:
    """Connections that hand their socket to the calling thread's :class:`Watchdog`."""

    def _watch(self, sock: socket.socket) -> socket.socket:
        dog = current()
        if dog is not None:
            dog.attach(sock)
        return sock

    def _connect_watched(self, address: tuple[str, int], *args: object) -> socket.socket:
        dog = current()
        timeout = args[0] if args else None
        if dog is not None and isinstance(timeout, int | float):
            args = (min(float(timeout), max(0.1, dog.remaining())), *args[1:])
        return self._watch(socket.create_connection(address, *args))  # type: ignore[arg-type]


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = self._connect_watched


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = self._connect_watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = getattr(self, "_context", None)
        return self.do_open(_HTTPSConnection, req, context=context)


def opener() -> urllib.request.OpenerDirector:
    """urllib's opener (proxies, redirects, TLS) whose connections a watchdog can cut."""
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


class Http:
    """A small HTTP client for metadata, boot files and payloads."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.received = 0
        self.user_agent = f"distbuild-update/{__version__}"
        self._opener = opener()

    def open(
        self, url: str, start: int = 0, end: int | None = None, *, expect: int | None = None
    ) -> Body:
        """GET ``url``, from byte ``start`` up to ``end`` (exclusive; None: the file's
        end) with a Range request; raise on HTTP errors.

        The headers must arrive within :attr:`Limits.deadline`; the body then has
        until :meth:`Limits.body_deadline` of its Content-Length (else of
        ``expect``, else of nothing more).
        """
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        elif start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(url, headers=headers)
        dog = Watchdog(self.limits.deadline).start()
        try:
            response = self._send(request, dog)
        except urllib.error.HTTPError as e:
            dog.close()
            e.close()
            if e.code == 416 and start:
                raise TransferError(f"{url}: server refused the range from byte {start}") from None
            raise HttpStatusError(url, e.code) from None
        except BaseException:
            dog.close()
            raise
        length = _int_header(response.headers.get("Content-Length"))
        body = Body(url, response, 0, length, None, dog)
        if response.status == 206:
            try:
                body.start, body.total = _content_range(url, response.headers.get("Content-Range"))
            except TransferError:
                body.close()
                raise
        expected = length if length is not None else expect
        if expected is not None:
            dog.extend(self.limits.body_deadline(expected))
        return body

    def _send(self, request: urllib.request.Request, dog: Watchdog) -> http.client.HTTPResponse:
        """Open ``request`` under ``dog``: connection and headers, or a clear error."""
        url = request.full_url
        try:
            with watching(dog):
                response = self._opener.open(request, timeout=self.limits.read_timeout)
        except urllib.error.HTTPError:
            raise  # the caller reads or closes it under the same watchdog
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            fired = dog.fired or dog.remaining() <= 0.05  # a timeout capped by the deadline
            dog.close()
            if fired:
                raise self._late(url, dog) from None
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError | socket.timeout):
                raise TooSlow(
                    f"{url}: no answer for {self.limits.read_timeout:.0f} s; cut off"
                ) from None
            raise TransferError(f"{url}: cannot connect: {reason}") from None
        if dog.fired:
            dog.close()
            response.close()
            raise self._late(url, dog)
        return response  # type: ignore[no-any-return]

    def _late(self, url: str, dog: Watchdog | None) -> TooSlow:
        seconds = dog.seconds if dog is not None else self.limits.deadline
        return TooSlow(
            f"{url}: no complete answer within the {_secs(seconds)} s deadline "
            "(a server trickling its headers or body); cut off",
            hint="raise request_deadline in update.yaml if the link is this slow",
        )

    def chunks(self, body: Body, limit: int) -> Iterator[bytes]:
        """The body's bytes, at most ``limit`` of them, under the time and rate limits.

        Never reads past ``limit``: a server sending more than that is not
        heard beyond it (the caller decides whether the excess is an error).
        """
        guard = RateGuard(self.limits, body.url)
        left = limit
        try:
            while left > 0:
                try:
                    chunk = body.response.read1(min(CHUNK, left))
                except TimeoutError:
                    if body.cut_off():
                        raise self._late(body.url, body.watchdog) from None
                    raise TooSlow(
                        f"{body.url}: no data for {self.limits.read_timeout:.0f} s; cut off"
                    ) from None
                except (OSError, http.client.HTTPException, ValueError) as e:
                    if body.cut_off():
                        raise self._late(body.url, body.watchdog) from None
                    raise TransferError(f"{body.url}: connection lost: {e}") from None
                if not chunk:
                    if body.cut_off():
                        raise self._late(body.url, body.watchdog)
                    return
                self.received += len(chunk)
                left -= len(chunk)
                guard.add(len(chunk))
                yield chunk
        finally:
            body.close()

    def has_more(self, body: Body) -> bool:
        """Whether the server sends anything after what was read (a body too long)."""
        try:
            extra = body.response.read1(1)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        return bool(extra)

    def get(self, url: str, max_length: int) -> bytes:
        """A whole small file, refusing one longer than ``max_length``."""
        body = self.open(url, expect=max_length)
        if body.length is not None and body.length > max_length:
            body.close()
            raise TransferError(
                f"{url}: server announces {body.length} bytes, more than the {max_length} allowed",
                retryable=False,
            )
        data = bytearray()
        for chunk in self.chunks(body, max_length + 1):
            data += chunk
        if len(data) > max_length:
            raise TransferError(
                f"{url}: server sent more than the {max_length} bytes allowed", retryable=False
            )
        return bytes(data)

    def post(
        self, url: str, data: bytes, headers: dict[str, str], max_length: int = 64 << 10
    ) -> tuple[int, bytes]:
        """POST ``data``; the status and (up to ``max_length`` bytes of) the answer,
        error statuses included, all within the request deadline."""
        request = urllib.request.Request(
            url, data=data, method="POST", headers={"User-Agent": self.user_agent, **headers}
        )
        dog = Watchdog(self.limits.deadline).start()
        try:
            try:
                response = self._send(request, dog)
            except urllib.error.HTTPError as e:
                return e.code, self._read_all(e, dog, url, max_length)
            with response:
                return response.status, self._read_all(response, dog, url, max_length)
        finally:
            dog.close()

    def _read_all(self, response: object, dog: Watchdog, url: str, max_length: int) -> bytes:
        read = getattr(response, "read", None)
        try:
            data = read(max_length) if read is not None else b""
        except (OSError, http.client.HTTPException, ValueError) as e:
            if dog.fired:
                raise self._late(url, dog) from None
            raise TransferError(f"{url}: connection lost: {e}") from None
        if dog.fired:
            raise self._late(url, dog)
        return bytes(data)


def _secs(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:g}"


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _content_range(url: str, value: str | None) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` → (START, TOTAL or None)."""
    try:
        unit, _, spec = (value or "").strip().partition(" ")
        rng, _, total = spec.partition("/")
        first = int(rng.split("-", 1)[0])
        if unit != "bytes":
            raise ValueError(unit)
        return first, (None if total.strip() == "*" else int(total))
    except ValueError:
        raise TransferError(f"{url}: unreadable Content-Range {value!r}") from None
