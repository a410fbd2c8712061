"""What a node's console says about its services and its clock (issue 12).

DESIGN §4's contract: ``distbuild-os: services up`` comes after ``booted
slot=…`` and before ``slot … marked good``; the health check says what it
checked. The first boot prints the SSH host key it made; rcS prints the
clock after the floor (the image's SOURCE_DATE_EPOCH) was applied.
"""

from __future__ import annotations

import re

# A node whose RTC starts at the epoch, as a board without an RTC battery does
# (arm64 and armv7: a PL031 counting from 0). A PC's CMOS clock cannot hold
# 1970: with q35's ACPI century register Linux reads its "70" as 2070, so
# amd64 starts at the oldest date CMOS holds as such, still behind the epoch.
RTC_1970 = ("-rtc", "base=1970-01-01")
RTC_CMOS_OLDEST = ("-rtc", "base=2000-01-01")


def rtc_behind_epoch(arch: str) -> tuple[str, ...]:
    return RTC_CMOS_OLDEST if arch == "amd64" else RTC_1970


_HOST_KEY = re.compile(r"distbuild-os: ssh host key made: Fingerprint: (SHA256:[A-Za-z0-9+/=]+)")
_CLOCK = re.compile(r"distbuild-os: clock=(\d+) floor=(\d+)")
_MOVED = re.compile(r"distbuild-os: clock was (\d+), behind the floor")


def assert_services_up(transcript: str, slot: str) -> None:
    """The last boot of ``slot`` said ``services up`` between booted and marked good."""
    booted = transcript.rindex(f"distbuild-os: booted slot={slot} ")
    up = transcript.index("distbuild-os: services up", booted)
    good = transcript.index(f"distbuild-os: slot {slot} marked good", booted)
    assert booted < up < good, transcript[booted:]
    checked = transcript[booted:up]
    assert "answers ctr version" in checked, checked
    assert "sshd listens on :22" in checked, checked


def host_key(transcript: str) -> str:
    """The fingerprint of the one SSH host key this (first) boot made."""
    keys = _HOST_KEY.findall(transcript)
    assert len(keys) == 1, keys
    return str(keys[0])


def clock_after_floor(transcript: str, epoch: int) -> int:
    """The clock rcS printed; it is at or after the image's epoch."""
    found = _CLOCK.findall(transcript)
    assert found, "no distbuild-os: clock= line on the console"
    now, floor = (int(v) for v in found[-1])
    assert floor == epoch, (floor, epoch)
    assert now >= epoch, (now, epoch)
    return now


def clock_was_moved(transcript: str, epoch: int) -> int:
    """The clock started behind the epoch and rcS moved it to the floor."""
    found = _MOVED.findall(transcript)
    assert found, "the clock was not behind the floor"
    before = int(found[-1])
    assert before < epoch
    return before


TAIL_LINES = 60  # of a failed story's console, in the failure's text (CI keeps its log only)


def console_tail(name: str, transcript: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` of a guest's console, headed with ``name``."""
    last = transcript.splitlines()[-lines:]
    return f"--- {name}: the console's last {len(last)} lines:\n" + "\n".join(last)
