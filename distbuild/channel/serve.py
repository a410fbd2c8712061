"""A static HTTP server for a repository directory, for tries and tests.

Any web server, object store or CDN can serve channels; this one exists so
that ``distbuild serve`` and the tests need nothing else. It serves files
only (no directory listings), answers ``Range`` requests (the node resumes
downloads with them) and counts the bytes it sends per request.

It never serves what is not the repository's to publish: a path that resolves
outside the directory (a symlink out of it), any path with a component that
starts with ``.`` (``.git``, dotfiles, in-progress temp files) or names a
``*.lock`` file is answered 404. Its resources are bounded: connections wait
for their first byte in one selector thread (dropped after
``idle_timeout``), at most ``workers`` threads answer requests, a request's
line and headers must arrive within ``header_timeout`` and fit in
``HEADER_LIMIT`` bytes, and at most ``max_connections`` are open at once.
"""

from __future__ import annotations

import io
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from distbuild.channel.bounded import HEADER_LIMIT, BoundedServer, DeadlineReader

NETBOOT_PREFIX = "netboot"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Transfer:
    """One answered request: path, status and bytes sent (headers included)."""

    path: str
    status: int
    sent: int


class Traffic:
    """What the server sent, request by request.

    Readers wait for requests in flight, so a client that has its answer can
    read the traffic without racing the server thread's bookkeeping.
    """

    def __init__(self) -> None:
        self._requests: list[Transfer] = []
        self._busy = 0
        self._cond = threading.Condition()

    def begin(self) -> None:
        with self._cond:
            self._busy += 1

    def end(self, transfer: Transfer | None) -> None:
        with self._cond:
            self._busy -= 1
            if transfer is not None:
                self._requests.append(transfer)
            self._cond.notify_all()

    def _settled(self) -> list[Transfer]:
        self._cond.wait_for(lambda: self._busy == 0, timeout=10)
        return list(self._requests)

    @property
    def requests(self) -> list[Transfer]:
        with self._cond:
            return self._settled()

    def clear(self) -> None:
        with self._cond:
            self._settled()
            self._requests.clear()

    @property
    def total(self) -> int:
        return sum(t.sent for t in self.requests)


class _Counter:
    """A write-through wrapper of the response stream that counts bytes."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        written: int = self.raw.write(data)
        return written

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class RepoHandler(SimpleHTTPRequestHandler):
    """Files under the served directory, with single-range requests; no listings."""

    traffic: Traffic | None = None
    # URL prefix -> another directory served under it (``serve --netboot``: /netboot/).
    mounts: tuple[tuple[str, str], ...] = ()
    _remaining: int | None = None  # bytes left of a range answer
    _status = 0
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain"

    timeout = 30.0  # seconds one socket read or write may block
    header_timeout = 10.0  # seconds for a request's line and headers, all of them

    def setup(self) -> None:
        super().setup()
        self.wfile = _Counter(self.wfile)  # type: ignore[assignment]
        self.rfile.close()  # the socket's own file: replaced by the bounded reader
        take = getattr(self.server, "take_head", None)
        head = take(self.connection) if take is not None else b""
        self._reader = DeadlineReader(self.connection, self.timeout, HEADER_LIMIT, head)
        self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._mount()
        self._reader.body()  # the headers are in (or refused): no deadline for what follows
        if ok and self._reader.too_long:
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large")
            return False
        return ok

    def _mount(self) -> None:
        """Serve a mounted directory's files for a path under its prefix (per request)."""
        if not hasattr(self, "_home"):
            self._home = self.directory
        self.directory = self._home
        for prefix, root in self.mounts:
            if self.path.startswith(f"/{prefix}/"):
                self.directory = root
                self.path = self.path[len(prefix) + 1 :]

    def translate_path(self, path: str) -> str:
        """The file under the directory, resolved; links out of it resolve to nothing."""
        local = super().translate_path(path)
        root = os.path.realpath(self.directory)
        real = os.path.realpath(local)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.join(root, ".outside")  # a dotfile: never served
        return real

    def _refused(self) -> bool:
        """A path naming a dotfile, a dot directory or a lock file (never published)."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        for part in path.split("/"):
            if part.startswith(".") or part.endswith(".lock"):
                return True
        real = self.translate_path(self.path)
        rel = os.path.relpath(real, os.path.realpath(self.directory))
        return rel != "." and any(
            p.startswith(".") or p.endswith(".lock") for p in rel.split(os.sep)
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and benchmarks read Traffic instead

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "not found")
        return None

    def send_head(self) -> Any:
        if self._refused():
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return None
        match = _RANGE.match(self.headers.get("Range", "").strip())
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, last = match.groups()
        if first:
            start, end = int(first), int(last) if last else size - 1
        elif last:
            start, end = max(0, size - int(last)), size - 1
        else:
            return super().send_head()
        if start >= size or start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        end = min(end, size - 1)
        f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        f.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        remaining, self._remaining = self._remaining, None
        if remaining is None:
            super().copyfile(source, outputfile)
            return
        while remaining > 0 and (chunk := source.read(min(1 << 16, remaining))):
            outputfile.write(chunk)
            remaining -= len(chunk)

    def handle_one_request(self) -> None:
        self._remaining = None
        self._status = 0
        self._reader.headers(self.header_timeout)
        traffic = self.traffic
        if traffic is None:
            super().handle_one_request()
            return
        traffic.begin()
        transfer = None
        try:
            super().handle_one_request()
        finally:
            counter = self.wfile
            if self._status and isinstance(counter, _Counter):
                transfer = Transfer(self.path, self._status, counter.count)
                counter.count = 0
            traffic.end(transfer)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)


@dataclass
class Server:
    """A running server: its base URL and what it has sent."""

    url: str
    traffic: Traffic
    httpd: BoundedServer

    def channel_urls(self, channel: str) -> tuple[str, str]:
        """The metadata and targets base URLs of one channel."""
        return f"{self.url}/{channel}/metadata/", f"{self.url}/{channel}/targets/"


def make_server(
    directory: Path,
    port: int = 0,
    bind: str = "127.0.0.1",
    *,
    workers: int = 16,
    idle_timeout: float = 5.0,
    header_timeout: float = 10.0,
    netboot: Path | None = None,
) -> Server:
    """Bind a server for ``directory`` (port 0: any free port); call serve_forever.

    ``netboot``: a directory served under ``/netboot/`` too (the installer's boot files).
    """
    traffic = Traffic()
    mounts = ((NETBOOT_PREFIX, os.path.realpath(netboot)),) if netboot is not None else ()
    handler = type(
        "Handler",
        (RepoHandler,),
        {"traffic": traffic, "header_timeout": header_timeout, "mounts": mounts},
    )
    root = os.path.realpath(directory)
    httpd = BoundedServer(
        (bind, port),
        partial(handler, directory=root),
        workers=workers,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
    )
    host, real_port = httpd.server_address[:2]
    return Server(f"http://{host!s}:{real_port}", traffic, httpd)


@contextmanager
def serving(
    directory: Path, port: int = 0, bind: str = "127.0.0.1", **limits: Any
) -> Iterator[Server]:
    """Serve ``directory`` from a background thread for the duration of the block
    (``limits``: :func:`make_server`'s keywords)."""
    server = make_server(directory, port, bind, **limits)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)
