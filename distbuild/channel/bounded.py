"""An HTTP server whose threads, idle connections and request headers are bounded.

``http.server.ThreadingHTTPServer`` starts a thread per connection and lets it
wait for a request for as long as the client likes: a few hundred clients
that connect and say nothing (or trickle a request) hold a few hundred
threads. Here an accepted connection first waits in one selector thread (the
waiting room), which reads its request line and headers: silent for
``idle_timeout`` seconds, or headers not complete ``header_timeout`` seconds
after their first byte, and it is closed; headers over ``HEADER_LIMIT`` bytes
get a 431. Only a complete request goes to the fixed pool of ``workers``
threads; past ``max_connections`` open at once, new ones are closed at once.

:class:`DeadlineReader` is the handler's ``rfile``: it gives the bytes the
waiting room read, then the socket's, and bounds a further request's headers
the same way (time and size) should the handler read one.
"""

from __future__ import annotations

import contextlib
import io
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import HTTPServer
from typing import Any

HEADER_LIMIT = 64 << 10
"""Bytes a request line and its headers may take together."""


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each receive bounded by the headers' deadline while it runs."""

    def __init__(
        self, sock: socket.socket, timeout: float, limit: int, prefix: bytes = b""
    ) -> None:
        self.sock = sock
        self._prefix = prefix
        self.timeout = timeout
        self.limit = limit
        self._deadline: float | None = None
        self._left = limit
        self.too_long = False  # the last request's headers passed the limit

    def headers(self, seconds: float) -> None:
        """A request starts: its line and headers must arrive within ``seconds``."""
        self._deadline = time.monotonic() + seconds
        self._left = self.limit
        self.too_long = False

    def body(self) -> None:
        """The headers are in: the per-receive timeout alone applies again."""
        self._deadline = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if self._deadline is None:
            self.sock.settimeout(self.timeout)
            return self.sock.recv_into(view)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request headers not received in time")
        if self._left <= 0:
            self.too_long = True
            return 0  # the parser sees the headers end here; the handler refuses them
        self.sock.settimeout(min(self.timeout, left))
        n = self.sock.recv_into(view[: self._left])
        self._left -= n
        return n


_TOO_LARGE = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
    b"headers too large\r\n"
)


@dataclass
class _Waiting:
    """A connection in the waiting room: who, until when, its request head so far."""

    address: Any
    until: float
    head: bytearray = field(default_factory=bytearray)


class _WaitingRoom:
    """One thread holding connections until they have a request to read (or time out)."""

    def __init__(
        self,
        idle_timeout: float,
        header_timeout: float,
        ready: Callable[[socket.socket, Any, bytes], None],
    ) -> None:
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.ready = ready
        self.drop: Callable[[socket.socket], None] = lambda s: None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._incoming: queue.SimpleQueue[tuple[socket.socket, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-waiting", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, address: Any) -> None:
        self._incoming.put((sock, address))
        self._wake()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.25):
                if key.data is None:
                    self._admit()
                    continue
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]
            self._expire()
        self._close_all()

    def _admit(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                sock, address = self._incoming.get_nowait()
            except queue.Empty:
                return
            until = time.monotonic() + self.idle_timeout
            self._selector.register(sock, selectors.EVENT_READ, _Waiting(address, until))

    def _read(self, sock: socket.socket, w: _Waiting) -> None:
        """More of a request's head; a complete one goes to a worker."""
        try:
            data = sock.recv(8192, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client left
            self._selector.unregister(sock)
            self.drop(sock)
            return
        if not w.head:
            w.until = time.monotonic() + self.header_timeout
        w.head += data
        if b"\r\n\r\n" in w.head or b"\n\n" in w.head:
            self._selector.unregister(sock)
            self.ready(sock, w.address, bytes(w.head))
        elif len(w.head) > HEADER_LIMIT:
            self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.send(_TOO_LARGE, socket.MSG_DONTWAIT)
            self.drop(sock)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._selector.get_map().values()):
            if key.data is not None and key.data.until <= now:
                self._selector.unregister(key.fileobj)
                self.drop(key.fileobj)  # type: ignore[arg-type]

    def _close_all(self) -> None:
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fileobj)
            if key.data is not None:
                self.drop(key.fileobj)  # type: ignore[arg-type]
        while True:
            try:
                sock, _ = self._incoming.get_nowait()
            except queue.Empty:
                break
            self.drop(sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def close(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # the room is closing; it drops what is queued
            self._wake_w.send(b"\0")


class BoundedServer(HTTPServer):
    """``HTTPServer`` with a waiting room for idle connections and a fixed worker pool."""

    request_queue_size = 128  # listen backlog: a burst of clients is not refused

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., Any],
        *,
        workers: int = 16,
        idle_timeout: float = 5.0,
        header_timeout: float = 10.0,
        max_connections: int = 512,
    ) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._open = 0
        self._lock = threading.Lock()
        self._heads: dict[int, bytes] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve-worker")
        self._room = _WaitingRoom(idle_timeout, header_timeout, self._dispatch)
        self._room.drop = self._drop

    def take_head(self, request: socket.socket) -> bytes:
        """The request head the waiting room read from ``request`` (the handler's first bytes)."""
        with self._lock:
            return self._heads.pop(id(request), b"")

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            self.shutdown_request(request)
            return
        self._room.add(request, client_address)

    def _dispatch(self, request: socket.socket, client_address: Any, head: bytes) -> None:
        with self._lock:
            self._heads[id(request)] = head
        try:
            self._pool.submit(self._work, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._drop(request)

    def _work(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a reset or a timed-out client: it must not end the worker
            pass
        finally:
            self._drop(request)

    def _drop(self, request: socket.socket) -> None:
        self.shutdown_request(request)
        with self._lock:
            self._open -= 1
            self._heads.pop(id(request), None)

    def server_close(self) -> None:
        super().server_close()
        self._room.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
