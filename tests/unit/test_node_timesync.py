"""SNTP time sync against real UDP servers on loopback; the clock setter is recorded
(a test must not set the host's clock)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from distbuild.node import timesync

Reply = Callable[[bytes], bytes | None]


def ntp_reply(offset: float, *, stratum: int = 2, echo: bool = True, mode: int = 4) -> Reply:
    """A server whose clock is ``offset`` seconds ahead of ours."""

    def reply(request: bytes) -> bytes:
        now = time.time() + offset
        sec, frac = timesync._to_ntp(now)
        origin = request[40:48] if echo else b"\x01" * 8
        head = struct.pack("!BBbb", (4 << 3) | mode, stratum, 4, -20) + b"\0" * 20
        return head + origin + struct.pack("!IIII", sec, frac, sec, frac)

    return reply


@contextmanager
def ntp_server(reply: Reply) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            answer = reply(data)
            if answer is not None:
                sock.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        sock.close()


def sync(port: int, floor: int = 0, servers: tuple[str, ...] = ("127.0.0.1",)) -> list[float]:
    set_to: list[float] = []
    timesync.sync_once(servers, floor, port=port, timeout=0.5, settime=set_to.append)
    return set_to


def test_a_clock_far_behind_is_stepped_to_the_servers_time() -> None:
    with ntp_server(ntp_reply(1000.0)) as port:
        (set_to,) = sync(port)
    assert abs(set_to - (time.time() + 1000.0)) < 1.0


def test_a_clock_in_sync_is_left_alone() -> None:
    with ntp_server(ntp_reply(0.0)) as port:
        assert sync(port) == []


def test_a_server_sending_the_node_below_its_floor_is_ignored() -> None:
    now = time.time()
    with ntp_server(ntp_reply(-now + 5)) as port, pytest.raises(timesync.TimeSyncError) as e:
        sync(port, floor=int(now) - 60)  # the server says it is 1970
    assert "before this node's floor" in e.value.message


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (ntp_reply(1000.0, echo=False), "not to our request"),
        (ntp_reply(1000.0, stratum=0), "unsynchronised"),  # a kiss-of-death
        (ntp_reply(1000.0, mode=3), "not a server answer"),
        (lambda request: b"\x24" * 20, "20-byte answer"),
    ],
)
def test_a_bad_answer_is_refused(reply: Reply, words: str) -> None:
    with ntp_server(reply) as port, pytest.raises(timesync.TimeSyncError) as e:
        sync(port)
    assert words in e.value.message


def test_a_silent_server_times_out_and_a_later_one_answers() -> None:
    with ntp_server(lambda request: None) as silent:
        started = time.monotonic()
        with pytest.raises(timesync.TimeSyncError) as e:
            sync(silent)
        assert time.monotonic() - started < 5
        assert "no answer" in e.value.message
    # One port for every server: a name that does not resolve stands in for a dead one.
    with ntp_server(ntp_reply(500.0)) as port:
        (set_to,) = sync(port, servers=("bad host name with spaces", "127.0.0.1"))
    assert abs(set_to - (time.time() + 500.0)) < 1.0
