"""requests with a wall-clock deadline per request (connect, headers and body).

requests' ``timeout`` bounds each socket operation, so a registry that sends
one byte of its answer every few seconds holds a push forever. :func:`session`
returns a ``requests.Session`` whose connections hand their sockets to the
calling thread's :class:`~distbuild.node.deadline.Watchdog`; :func:`request`
runs one request under a watchdog and tells a cut-off from other failures.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from distbuild.core.errors import FetchError
from distbuild.node.deadline import Watchdog, current, watching


class DeadlineExceeded(Exception):
    """The request was cut off at its deadline."""


def _attach(sock: socket.socket | None) -> None:
    dog = current()
    if dog is not None and sock is not None:
        dog.attach(sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self.sock)  # a kept-alive connection, reused
        super().request(*args, **kwargs)


class _HTTPSConnection(_HTTPConnection, urllib3.connection.HTTPSConnection):
    """The same watching over TLS: ``super()`` in the methods above is then HTTPS's."""


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def session() -> requests.Session:
    """A session whose requests a :class:`Watchdog` can cut off."""
    s = requests.Session()
    s.mount("http://", _Adapter())
    s.mount("https://", _Adapter())
    return s


@contextmanager
def watched(seconds: float, late: Callable[[str], Exception]) -> Iterator[Watchdog]:
    """Make a request (the body of the ``with``) under a new :class:`Watchdog` of ``seconds``.

    A failure that the cut-off caused is raised as ``late(why)``, others as they
    are. The caller still asks ``dog.fired`` of a body that seemed to end well.
    """
    dog = Watchdog(seconds).start()
    try:
        with watching(dog):
            yield dog
    except (requests.RequestException, OSError, urllib3.exceptions.HTTPError):
        if dog.fired:
            raise late(f"no complete answer within {dog.seconds:.0f} s") from None
        raise
    finally:
        dog.close()


class TooLarge(FetchError):
    """The answer's body is larger than the caller allows."""


def request(
    s: requests.Session, method: str, url: str, deadline: float, limit: int, **kw: Any
) -> requests.Response:
    """``s.request(...)`` that ends by ``deadline`` seconds from now, its body read
    whole but refused past ``limit`` bytes.

    Raises :class:`DeadlineExceeded` when cut off, :class:`TooLarge` for a body
    over the limit, else what requests raises.
    """
    with watched(deadline, DeadlineExceeded) as dog:
        resp = s.request(method, url, stream=True, **kw)
        _read(resp, limit)
    if dog.fired:  # a body without a length may look complete when cut
        resp.close()
        raise DeadlineExceeded(f"no complete answer within {deadline:.0f} s")
    return resp


def _read(resp: requests.Response, limit: int) -> None:
    """Read the body into ``resp.content``, at most ``limit`` bytes."""
    with resp:
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise TooLarge(f"{resp.url}: the answer is {length} bytes, more than {limit} allowed")
        body = bytearray()
        for chunk in resp.iter_content(64 << 10):
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"{resp.url}: the answer is more than the {limit} bytes allowed")
        resp._content = bytes(body)  # what .content, .json() and .text read
