"""The clock floor's logic: which time wins, what is kept, what a hostile file does."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.core.releases import Release, ReleaseIndex
from distbuild.node import clock


def test_floor_is_the_image_epoch_without_a_verified_time(tmp_path: Path) -> None:
    f = clock.floor(1_700_000_000, tmp_path)
    assert f.seconds == 1_700_000_000 and "SOURCE_DATE_EPOCH" in f.source
    assert clock.floor(None, tmp_path).seconds == 0


def test_a_newer_verified_time_raises_the_floor_and_never_lowers_it(tmp_path: Path) -> None:
    clock.record_verified(tmp_path, 1_800_000_000)
    clock.record_verified(tmp_path, 1_750_000_000)  # older: the kept floor stays
    clock.record_verified(tmp_path, None)
    assert clock.read_verified(tmp_path) == 1_800_000_000
    f = clock.floor(1_700_000_000, tmp_path)
    assert f.seconds == 1_800_000_000 and "verified" in f.source
    # An image newer than anything verified wins.
    assert clock.floor(1_900_000_000, tmp_path).seconds == 1_900_000_000


@pytest.mark.parametrize(
    "content", ["", "soon\n", "-5\n", "1e9\n", "99999999999999999999\n", "١٢٣\n", "\x00\xff"]
)
def test_a_hostile_floor_file_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / clock.FLOOR_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    assert clock.read_verified(tmp_path) is None
    assert clock.floor(1_700_000_000, tmp_path).seconds == 1_700_000_000
    clock.record_verified(tmp_path, 1_750_000_000)  # replaced by a good value
    assert clock.read_verified(tmp_path) == 1_750_000_000


def test_require_refuses_below_the_floor_only(tmp_path: Path) -> None:
    f = clock.Floor(1_764_201_600, "the image's SOURCE_DATE_EPOCH")
    clock.require(1_764_201_600, f)
    clock.require(1_764_201_601, f)
    # A few minutes of skew between the publisher's clock and the node's is no reason.
    clock.require(1_764_201_600 - clock.SKEW, f)
    with pytest.raises(clock.ClockBehind):
        clock.require(1_764_201_600 - clock.SKEW - 1, f)
    with pytest.raises(clock.ClockBehind) as e:
        clock.require(0, f)
    assert "1970-01-01T00:00:00Z" in e.value.message
    assert "2025-11-27T00:00:00Z" in e.value.message
    assert e.value.hint and "ntp" in e.value.hint


def test_newest_signed_time_is_the_latest_published() -> None:
    assert clock.newest_signed_time(ReleaseIndex("stable")) is None
    index = ReleaseIndex(
        "stable",
        releases=(
            Release("node", "2", 1_750_000_000, (), {}),
            Release("node", "1", 1_760_000_000, (), {}),
        ),
    )
    assert clock.newest_signed_time(index) == 1_760_000_000
