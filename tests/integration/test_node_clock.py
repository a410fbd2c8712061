"""The clock floor: nothing is applied while the clock is behind a time known to have passed.

Real channels (the project's ``publish``) served over HTTP, the real updater.
The floor is the image's SOURCE_DATE_EPOCH (``EPOCH=`` in the release file)
or the newest release time the node verified in signed metadata, kept in
its state directory (``time-floor``) for the boot's clock-floor script.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from distbuild.channel.serve import serving
from distbuild.node import clock
from distbuild.node.config import read_release
from distbuild.node.tufclient import Refused
from tests.support.node import Channel, Node, make_channel

SIZE = 1 << 20
DAY = 86400


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE)
    return c


def refused_for_clock(node: Node, words: str) -> None:
    with pytest.raises(clock.ClockBehind) as e:
        node.updater().apply()
    assert isinstance(e.value, Refused)
    assert "not applying anything until the clock is set" in e.value.message
    assert words in e.value.message
    result = node.status()["last_result"]
    assert not result["ok"] and words in result["message"]
    assert node.untouched("b"), "a byte reached the slot while the clock was behind"
    assert not node.reboot_marker.exists()


def test_clock_behind_the_image_epoch_refuses_then_applies(tmp_path: Path, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    with serving(chan.repo) as server:
        node = Node(tmp_path / "node", epoch=int(time.time()) + DAY)
        node.setup(server.url, chan.root_json, "v1")
        assert read_release(node.paths.release).epoch == node.epoch
        refused_for_clock(node, "behind the image's SOURCE_DATE_EPOCH")
        # The same node with a clock past its floor installs the update.
        node.epoch = int(time.time()) - DAY
        node.show("a", "v1")
        outcome = node.updater().apply()
        assert outcome.ok and outcome.rebooting
        assert node.boot() == ("b", "v2")


def test_verified_release_time_becomes_the_floor(tmp_path: Path, chan: Channel) -> None:
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    chan.publish("v2", size=SIZE, now=future)
    with serving(chan.repo) as server:
        node = Node(tmp_path / "node", epoch=int(time.time()) - DAY)
        node.setup(server.url, chan.root_json, "v1")
        refused_for_clock(node, "behind the newest release time this node verified")
        kept = (node.state_dir / clock.FLOOR_FILE).read_text()
        assert int(kept) == int(future.timestamp())
        floor = clock.floor(node.epoch, node.state_dir)
        assert floor.seconds == int(future.timestamp())


def test_a_release_file_without_epoch_has_no_floor(tmp_path: Path, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    with serving(chan.repo) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1")
        assert read_release(node.paths.release).epoch is None
        assert node.updater().apply().rebooting
        # The newest signed release time was kept for the next boot.
        assert clock.read_verified(node.state_dir) is not None
