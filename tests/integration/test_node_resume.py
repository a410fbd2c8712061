"""Interrupted installs resume with HTTP Range; slow and silent servers are cut off."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from distbuild.node.http import TransferError
from tests.support.node import Channel, Misbehave, Node, fault_server, make_channel, payload

SIZE = 4 << 20


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE)
    c.publish("v2", size=SIZE)
    return c


def slot_b(node: Node) -> bytes:
    with node.device("b").open("rb") as f:
        return f.read(SIZE)


def test_a_dropped_connection_is_resumed_with_range(tmp_path: Path, chan: Channel) -> None:
    fault = Misbehave(cut=int(SIZE * 0.4))
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1")
        assert node.updater().apply().rebooting
        requests = [t for t in server.traffic.requests if t.path.endswith("root.img")]
        assert [t.status for t in requests] == [200, 206]
        assert server.sent() <= 1.05 * SIZE
    assert slot_b(node) == payload("v2", "armv7", SIZE)
    assert "retrying from byte" in node.log()
    assert node.boot() == ("b", "v2")


def test_power_cut_mid_write_then_resume(tmp_path: Path, chan: Channel) -> None:
    # ~2 s for the payload, so the updater can be killed in the middle of it.
    fault = Misbehave(rate=SIZE / 2)
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1")
        offset = node.cut_apply(SIZE // 2)
        assert SIZE // 2 <= offset < SIZE, "the updater was not cut mid-write"
        first = server.sent()

        # The next boot: the same version from the same slot (B was never made bootable).
        assert node.boot() == ("a", "v1")
        assert node.status()["download"]["offset"] >= SIZE // 2

        fault.rate = None
        assert node.updater().apply().rebooting
        requests = [t for t in server.traffic.requests if t.path.endswith("root.img")]
        assert requests[-1].status == 206
        total = server.sent()
    assert first < SIZE and total <= 1.05 * SIZE, (first, total)
    assert "resuming node/v2/armv7/root.img at byte" in node.log()
    assert slot_b(node) == payload("v2", "armv7", SIZE)
    assert node.status()["download"] is None
    assert node.boot() == ("b", "v2")


def test_a_trickling_server_is_cut_off(tmp_path: Path, chan: Channel) -> None:
    fault = Misbehave(rate=4096)
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(
            server.url, chan.root_json, "v1", min_rate=256 * 1024, rate_window=0.5, retries=2
        )
        started = time.monotonic()
        with pytest.raises(TransferError, match="server too slow"):
            node.updater().apply()
        assert time.monotonic() - started < 10
        assert fault.hits == 2  # tried again once, then gave up
    status = node.status()
    assert "server too slow" in status["last_result"]["message"]
    assert status["boot_order"] == ["a"] and not status["slots"]["b"]["bootable"]
    assert not node.reboot_marker.exists()


def test_a_silent_server_is_cut_off_and_the_next_attempt_resumes(
    tmp_path: Path, chan: Channel
) -> None:
    fault = Misbehave(cut=256 * 1024, stall=2)
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1", read_timeout=1)
        assert node.updater().apply().rebooting
        assert server.sent() <= 1.05 * SIZE
    assert "no data for 1 s" in node.log()
    assert slot_b(node) == payload("v2", "armv7", SIZE)
