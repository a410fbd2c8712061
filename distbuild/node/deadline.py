"""A wall-clock deadline for one HTTP request: connect, headers and body.

Socket timeouts bound each receive, not a request: a server that sends one
byte of its headers every few seconds never trips them. A :class:`Watchdog`
holds a duplicate of every socket the request opens (:meth:`Watchdog.attach`);
when the deadline passes, a timer thread shuts those sockets down, which makes
the blocked receive in the requesting thread return at once. The reader then
asks :attr:`Watchdog.fired` to tell a cut-off from a server that closed.

The duplicates are the watchdog's own descriptors, so a socket the HTTP
library closed (and whose number the kernel gave to another file) is never
touched; they are closed with the watchdog. Standard library only: the node
(DESIGN.md §6) and the registry client both use it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


class Watchdog:
    """Shuts a request's sockets down once ``seconds`` have passed since :meth:`start`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._ids: set[int] = set()
        self._timer: threading.Timer | None = None
        self._closed = False

    def start(self) -> Watchdog:
        self.started = time.monotonic()
        self._arm(self.seconds)
        return self

    def _arm(self, seconds: float) -> None:
        timer = threading.Timer(max(0.0, seconds), self._fire)
        timer.daemon = True
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = timer
        timer.start()

    def extend(self, seconds: float) -> None:
        """Make the deadline ``seconds`` after :meth:`start` (e.g. a longer one for a body)."""
        if self.fired or self._closed:
            return
        self.seconds = seconds
        self._arm(self.started + seconds - time.monotonic())

    def remaining(self) -> float:
        return self.started + self.seconds - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        """Watch ``sock`` (a connection this request opened or reuses)."""
        try:
            key = sock.fileno()
            # By descriptor: an ssl.SSLSocket refuses dup(), and the shutdown acts on
            # the connection underneath either way.
            mine = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(key))
        except (OSError, ValueError):
            return
        with self._lock:
            if key in self._ids or self._closed:
                mine.close()
                return
            self._ids.add(key)
            self._socks.append(mine)
            fired = self.fired
        if fired:
            _shutdown(mine)

    def _fire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.fired = True
            socks = list(self._socks)
        for s in socks:
            _shutdown(s)

    def close(self) -> None:
        """Stop the timer and let go of the sockets (the request is over)."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
            socks, self._socks = self._socks, []
            self._ids.clear()
        if timer is not None:
            timer.cancel()
        for s in socks:
            s.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or by us
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def watching(dog: Watchdog) -> Iterator[Watchdog]:
    """Make ``dog`` the calling thread's current watchdog (see :func:`current`)."""
    previous = getattr(_current, "dog", None)
    _current.dog = dog
    try:
        yield dog
    finally:
        _current.dog = previous


def current() -> Watchdog | None:
    """The watchdog of the request the calling thread is making, if any."""
    dog = getattr(_current, "dog", None)
    return dog if isinstance(dog, Watchdog) else None
