"""HTTP for the node: streamed bodies with Range, read timeouts and a throughput floor.

Standard library only (``urllib.request``: proxies from the environment, TLS
against the system's CA store, redirects). The payload is read with
``read1`` so a server that trickles bytes gives control back after every
packet and the throughput floor can cut it off; a read timeout ends a
server that goes silent. Every body byte received is counted in
:attr:`Http.received` (resume tests and benchmarks read it).
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from distbuild import __version__
from distbuild.errors import FetchError

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
    """When to give up on a server: silent for ``read_timeout`` seconds, or slower
    than ``min_rate`` bytes/s over a ``rate_window``-second window."""

    read_timeout: float = 30.0
    min_rate: int = 16 * 1024
    rate_window: float = 60.0


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

    def close(self) -> None:
        self.response.close()


class Http:
    """A small HTTP client for metadata, boot files and payloads."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.received = 0
        self.user_agent = f"distbuild-update/{__version__}"

    def open(self, url: str, start: int = 0, end: int | None = None) -> Body:
        """GET ``url``, from byte ``start`` up to ``end`` (exclusive; None: the file's
        end) with a Range request; raise on HTTP errors."""
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        elif start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.limits.read_timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and start:
                raise TransferError(f"{url}: server refused the range from byte {start}") from None
            raise HttpStatusError(url, e.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise TransferError(f"{url}: cannot connect: {reason}") from None
        length = _int_header(response.headers.get("Content-Length"))
        body_start, total = 0, None
        if response.status == 206:
            body_start, total = _content_range(url, response.headers.get("Content-Range"))
        return Body(url, response, body_start, length, total)

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
                    raise TooSlow(
                        f"{body.url}: no data for {self.limits.read_timeout:.0f} s; cut off"
                    ) from None
                except (OSError, http.client.HTTPException) as e:
                    raise TransferError(f"{body.url}: connection lost: {e}") from None
                if not chunk:
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
        except (OSError, http.client.HTTPException):
            return False
        return bool(extra)

    def get(self, url: str, max_length: int) -> bytes:
        """A whole small file, refusing one longer than ``max_length``."""
        body = self.open(url)
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
