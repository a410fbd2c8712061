"""The node's clock floor: the newest time the node knows has already passed.

A board without an RTC battery boots in 1970, where TUF's expiry checks mean
nothing. Two times are known to be in the past: the image's
``SOURCE_DATE_EPOCH`` (``EPOCH=`` in ``/etc/distbuild/release``) and the
newest release time the node read in signed channel metadata, which the
updater keeps in its state directory (``time-floor``). At boot
``/usr/lib/distbuild/clock-floor`` moves the clock forward to the larger of
the two (as systemd's ``clock-epoch`` does); the updater refuses to apply
anything while the clock is still below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distbuild.core.releases import ReleaseIndex
from distbuild.node.state import now_iso, write_atomic
from distbuild.node.tufclient import Refused

FLOOR_FILE = "time-floor"  # read by the image's clock-floor script too
# The publisher's clock and the node's may differ by a little: a release
# published seconds ago by a fast clock does not make the node's clock wrong.
SKEW = 300
_MAX = 1 << 40  # far beyond any real time; a larger number is not one


class ClockBehind(Refused):
    """The clock is below the floor: nothing is applied until it is set."""


@dataclass(frozen=True)
class Floor:
    seconds: int
    source: str


def _number(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 13:
        return None
    value = int(text)
    return value if value < _MAX else None


def read_verified(state_dir: Path) -> int | None:
    """The newest signed time recorded in ``state_dir`` (None if none or unreadable)."""
    try:
        return _number((state_dir / FLOOR_FILE).read_text(errors="replace"))
    except (OSError, ValueError):
        return None


def newest_signed_time(index: ReleaseIndex) -> int | None:
    """The latest ``published`` time of the verified release index."""
    times = [r.published for r in index.releases]
    return max(times) if times else None


def record_verified(state_dir: Path, seconds: int | None) -> None:
    """Keep ``seconds`` as the verified floor if it is newer than the one kept."""
    if seconds is None or not 0 <= seconds < _MAX:
        return
    old = read_verified(state_dir)
    if old is not None and old >= seconds:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(state_dir / FLOOR_FILE, f"{seconds}\n".encode())


def floor(image_epoch: int | None, state_dir: Path) -> Floor:
    """The larger of the image's epoch and the verified channel time."""
    image = Floor(image_epoch or 0, "the image's SOURCE_DATE_EPOCH")
    verified = read_verified(state_dir)
    if verified is not None and verified > image.seconds:
        return Floor(verified, "the newest release time this node verified")
    return image


def require(now: int, current: Floor) -> None:
    """Refuse (:class:`ClockBehind`) while ``now`` is below the floor (less :data:`SKEW`)."""
    if now >= current.seconds - SKEW:
        return
    raise ClockBehind(
        f"the clock ({now_iso(now)}) is behind {current.source} "
        f"({now_iso(current.seconds)}); not applying anything until the clock is set",
        hint="set the time (busybox ntpd with servers from DHCP option 42 or "
        "/etc/distbuild/ntp.servers); the boot moves the clock to the floor",
    )
