"""Time sync over SNTP (RFC 4330), as systemd-timesyncd does it.

Debian's busybox (dynamic and static) is built without ``ntpd``, so the node
asks its time servers itself: one request per server in turn until one gives
a sane answer, and the clock is stepped when it is off by more than
:data:`STEP` seconds. An answer that would put the clock below the node's
floor (:mod:`distbuild.node.clock`) is ignored: a spoofed or broken server
cannot send the node back to 1970. Every wait has a deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distbuild.core.errors import DistbuildError

log = logging.getLogger("distbuild.node")

NTP_EPOCH = 2208988800  # seconds from 1900-01-01 to 1970-01-01
STEP = 0.5  # seconds off before the clock is stepped
_PACKET = struct.Struct("!BBbb11I")  # flags, stratum, poll, precision, 11 words


class TimeSyncError(DistbuildError):
    """No server gave a usable answer."""

    exit_code = 9


@dataclass(frozen=True)
class Answer:
    server: str
    offset: float  # seconds to add to the local clock
    stratum: int


def _to_ntp(t: float) -> tuple[int, int]:
    seconds = int(t) + NTP_EPOCH
    return seconds & 0xFFFFFFFF, int((t % 1) * (1 << 32)) & 0xFFFFFFFF


def _from_ntp(seconds: int, fraction: int) -> float:
    return seconds - NTP_EPOCH + fraction / (1 << 32)


def query(server: str, port: int = 123, timeout: float = 5.0) -> Answer:
    """Ask one server (RFC 4330 client mode); raise :class:`TimeSyncError` on anything odd."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(server, port, type=socket.SOCK_DGRAM)[
            0
        ]
    except (OSError, UnicodeError) as e:
        raise TimeSyncError(f"time server {server!r}: {e}") from None
    # The transmit time we send is random: the answer must echo it (RFC 4330 §5).
    nonce = struct.unpack("!II", os.urandom(8))
    request = _PACKET.pack(0x23, 0, 0, 0, *([0] * 9), *nonce)  # LI 0, version 4, mode 3
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        try:
            t1 = time.time()
            sock.sendto(request, address)
            data, _ = sock.recvfrom(512)
            t4 = time.time()
        except OSError as e:
            raise TimeSyncError(f"time server {server}: no answer ({e})") from None
    return _answer(server, data, nonce, t1, t4)


def _answer(server: str, data: bytes, nonce: tuple[int, int], t1: float, t4: float) -> Answer:
    if len(data) < _PACKET.size:
        raise TimeSyncError(f"time server {server}: a {len(data)}-byte answer")
    flags, stratum, _, _, *words = _PACKET.unpack_from(data)
    if flags & 0x07 != 4 or flags >> 6 == 3 or not 1 <= stratum <= 15:
        raise TimeSyncError(f"time server {server}: unsynchronised or not a server answer")
    if (words[5], words[6]) != nonce:
        raise TimeSyncError(f"time server {server}: the answer is not to our request")
    t2, t3 = _from_ntp(words[7], words[8]), _from_ntp(words[9], words[10])
    if words[9] == 0:
        raise TimeSyncError(f"time server {server}: no transmit time")
    return Answer(server, ((t2 - t1) + (t3 - t4)) / 2, stratum)


def set_clock(seconds: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, seconds)


def sync_once(
    servers: Sequence[str],
    floor: int,
    *,
    port: int = 123,
    timeout: float = 5.0,
    settime: Callable[[float], None] = set_clock,
) -> str:
    """Ask the servers in turn; step the clock by the first sane answer."""
    problems = []
    for server in servers:
        try:
            answer = query(server, port, timeout)
        except TimeSyncError as e:
            problems.append(e.message)
            continue
        target = time.time() + answer.offset
        if target < floor:
            problems.append(
                f"time server {server} says {int(target)}, before this node's floor "
                f"{floor}; ignored"
            )
            continue
        if abs(answer.offset) <= STEP:
            return f"clock in sync with {server} (off by {answer.offset:+.3f} s)"
        settime(target)
        return f"clock stepped by {answer.offset:+.3f} s from {server}"
    raise TimeSyncError(
        "; ".join(problems) or "no time servers", hint="check the servers and the network"
    )


def run(
    servers: Sequence[str], floor: Callable[[], int], interval: float, stop: threading.Event
) -> None:
    """Sync now and every ``interval`` seconds (sooner, 32 s at most, while failing)."""
    while not stop.is_set():
        try:
            log.info("%s", sync_once(servers, floor()))
            wait = interval
        except TimeSyncError as e:
            log.warning("time sync: %s", e.message)
            wait = min(32.0, interval)
        stop.wait(wait)
