"""Reboot policies: FleetLock (Zincati's protocol) against a lock server the test runs, and kured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel.serve import serving
from distbuild.node.daemon import run_loop
from distbuild.node.system import app_id
from tests.support.node import Channel, LockServer, Node, fleetlock_server, make_channel

SIZE = 1 << 20
NODE_ID = "0123456789abcdef0123456789abcdef"  # Node.setup's /etc/machine-id


@pytest.fixture
def lock_server(tmp_path: Path) -> Iterator[LockServer]:
    with fleetlock_server(tmp_path / "node" / "rebooted") as server:
        yield server


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE)
    c.publish("v2", size=SIZE)
    return c


@pytest.fixture
def node(tmp_path: Path, chan: Channel, lock_server: LockServer) -> Iterator[Node]:
    with serving(chan.repo) as server:
        n = Node(tmp_path / "node")
        n.setup(
            server.url,
            chan.root_json,
            "v1",
            reboot="fleetlock",
            fleetlock_url=lock_server.url,
            fleetlock_group="workers",
        )
        yield n


def test_fleetlock_lock_taken_before_reboot_and_released_after_marked_good(
    node: Node, lock_server: LockServer
) -> None:
    me = app_id(NODE_ID)
    assert node.updater().apply().rebooting
    assert node.reboot_marker.exists()
    assert [(c.path, c.rebooted) for c in lock_server.calls] == [("/v1/pre-reboot", False)]
    assert lock_server.calls[0].client == {"id": me, "group": "workers"}
    assert lock_server.holder == {"workers": me}

    assert node.boot() == ("b", "v2")
    assert lock_server.holder == {"workers": me}, "held across the reboot"
    result = node.updater().mark_good()
    assert "FleetLock reboot lock released" in result.message
    assert [c.path for c in lock_server.calls] == ["/v1/pre-reboot", "/v1/steady-state"]
    assert lock_server.holder == {}
    assert node.status()["fleetlock_held"] is False


def test_fleetlock_held_by_another_node_waits_without_rebooting(
    node: Node, lock_server: LockServer
) -> None:
    lock_server.holder["workers"] = "another-node"
    outcome = node.updater().apply()
    assert not outcome.rebooting and not node.reboot_marker.exists()
    assert "waiting for the FleetLock reboot lock" in outcome.message
    assert "held by another-node" in outcome.message
    status = node.status()
    assert status["pending"]["version"] == "v2" and not status["pending"]["reboot_requested"]
    assert status["boot_order"][0] == "b", "installed and set to boot next, just not rebooted"

    # The daemon asks again on its next round: still held, still no reboot.
    assert run_loop(node.updater, once=True) == 0
    assert not node.reboot_marker.exists()
    assert [c.path for c in lock_server.calls] == ["/v1/pre-reboot"] * 2

    del lock_server.holder["workers"]  # the other node is back and released it
    run_loop(node.updater, once=True)
    assert node.reboot_marker.exists()
    assert lock_server.holder == {"workers": app_id(NODE_ID)}
    assert node.boot() == ("b", "v2")
    node.updater().mark_good()
    assert lock_server.holder == {}


def test_kured_policy_writes_the_sentinel_and_does_not_reboot(
    tmp_path: Path, chan: Channel
) -> None:
    with serving(chan.repo) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1", reboot="kured")
        outcome = node.updater().apply()
    assert not outcome.rebooting and "kured reboots it" in outcome.message
    assert not node.reboot_marker.exists()
    sentinel = node.root / "var/run/reboot-required"
    assert "v2" in sentinel.read_text()
    assert node.boot() == ("b", "v2")
    node.updater().mark_good()


def test_never_policy_installs_and_leaves_the_reboot_to_a_person(
    tmp_path: Path, chan: Channel
) -> None:
    with serving(chan.repo) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1", reboot="never")
        outcome = node.updater().apply()
        assert not outcome.rebooting and not node.reboot_marker.exists()
        # A later round does not install the same release again.
        again = node.updater().apply()
        assert "v2 is installed in slot b; waiting for a reboot" in again.message
        fetched = [t for t in server.traffic.requests if t.path.endswith("root.img")]
        assert len(fetched) == 1
    assert node.status()["pending"]["version"] == "v2"
    assert node.boot() == ("b", "v2")
