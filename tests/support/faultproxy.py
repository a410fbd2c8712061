"""A reverse proxy on 127.0.0.1 that breaks requests on purpose, and logs them all.

It sits in front of a real registry and forwards every request unchanged (the
``Host`` header too, so the registry's ``Location`` headers point back at the
proxy), except those a :class:`Fault` matches: these get an error status, or
their connection is reset after part of the request body was read, the way a
flaky network or an overloaded registry behaves. Every request is logged with
its method, path, status and body size, so tests can count what really reached
the registry.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

DROP = "drop"
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass
class Fault:
    """Break requests whose method is ``method`` and whose path matches ``path``
    (and, when ``body`` is set, that do or do not carry a body).

    ``action`` is an HTTP status to answer with, or ``DROP`` to reset the
    connection halfway through the request body. The first ``after`` matching
    requests pass; then ``times`` of them break (``None``: all of them).
    """

    method: str
    path: str
    action: int | str
    times: int | None = 1
    after: int = 0
    body: bool | None = None
    seen: int = 0
    fired: int = 0

    def hit(self, method: str, path: str, length: int) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        if self.body is not None and self.body != (length > 0):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    status: int | str  # the status sent, or DROP
    body: int  # request body bytes received


@dataclass
class FaultProxy:
    upstream: str  # host:port of the real server
    faults: list[Fault] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, method: str | None = None, path: str = "") -> list[Logged]:
        with self._lock:
            return [
                r
                for r in self.log
                if (method is None or r.method == method) and re.search(path, r.path)
            ]

    def _fault(self, method: str, path: str, length: int) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.hit(method, path, length)), None)

    def _record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as registries and their clients use it

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.send_error(501, "the fault proxy does not take chunked request bodies")
            return
        fault = self.owner._fault(self.command, self.path, length)
        if fault is not None and fault.action == DROP:
            got = len(self.rfile.read(length // 2)) if length else 0
            self.owner._record(Logged(self.command, self.path, DROP, got))
            # Linger 0: close with a reset, the way a dying peer or middlebox does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if fault is not None:
            status = int(fault.action)
            self.owner._record(Logged(self.command, self.path, status, len(body)))
            payload = json.dumps(
                {"errors": [{"code": "UNAVAILABLE", "message": "injected by the fault proxy"}]}
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.owner.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.owner._record(Logged(self.command, self.path, resp.status, len(body)))
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            # A HEAD answer carries the length of the body it does not send.
            length_out = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length_out or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
