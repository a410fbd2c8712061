"""distbuild-update against a real TUF channel over HTTP, on a node tree on the host.

The channel is written by the project's own ``publish`` and served from
127.0.0.1; the TUF client is python-tuf's ngclient; the boot control is the
real U-Boot backend on a directory; files stand in for the slot devices.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel.serve import serving
from distbuild.node.tufclient import Refused
from tests.support.node import Channel, Node, make_channel, payload

ARCH = "armv7"
SIZE = 1 << 20


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE)
    return c


@pytest.fixture
def served(chan: Channel) -> Iterator[str]:
    with serving(chan.repo) as server:
        yield server.url


@pytest.fixture
def node(tmp_path: Path, chan: Channel, served: str) -> Node:
    n = Node(tmp_path / "node")
    n.setup(served, chan.root_json, "v1")
    return n


def slot_bytes(node: Node, slot: str, length: int) -> bytes:
    with node.device(slot).open("rb") as f:
        return f.read(length)


def test_update_installs_into_the_other_slot_reboots_and_is_blessed(
    node: Node, chan: Channel
) -> None:
    chan.publish("v2", size=SIZE)
    outcome = node.updater().apply()
    assert outcome.rebooting and outcome.version == "v2"
    assert node.reboot_marker.exists(), "the immediate policy ran the reboot command"

    assert slot_bytes(node, "b", SIZE) == payload("v2", ARCH, SIZE)
    assert node.untouched("a"), "the running slot is never written"
    bc = node.bootctl()
    assert bc.boot_order()[0] == "b"
    b = bc.states()["b"]
    assert (b.version, b.tries_left, b.good) == ("v2", 3, False)
    assert node.boot_dir.joinpath("b/zImage").read_bytes() == b"kernel v2 armv7\n" * 64
    assert node.boot_dir.joinpath("b/initrd.img").read_bytes() == b"initrd v2 armv7\n" * 64
    entry = node.boot_dir.joinpath("b/bootargs.env").read_text()
    assert "distbuild.version=v2" in entry and "distbuild.slot=b" in entry

    assert node.boot() == ("b", "v2")
    result = node.updater().mark_good()
    assert result.ok and "updated from v1 to v2" in result.message
    status = node.status()
    assert status["booted"] == {"slot": "b", "version": "v2"}
    assert status["other"] == {"slot": "a", "version": "v1"}
    assert status["slots"]["b"]["good"] and status["pending"] is None
    assert status["last_check"] is not None
    # Nothing newer: the next check says so and touches nothing.
    outcome, candidate = node.updater().check()
    assert candidate is None and "up to date" in outcome.message


def test_a_release_that_fails_to_boot_is_rolled_back_and_never_retried(
    node: Node, chan: Channel, served: str
) -> None:
    chan.publish("v2", size=SIZE)
    node.updater().apply()
    node.boot()
    node.updater().mark_good()

    chan.publish("v3", size=SIZE)  # its init "fails": the node never marks it good
    node.updater().apply()
    assert node.bootctl().boot_order()[0] == "a"
    seen = [node.boot() for _ in range(4)]
    # Three tries of v3 in slot a, then the boot loader falls back to v2 by itself.
    assert seen == [("a", "v3")] * 3 + [("b", "v2")]
    node.updater().mark_good()

    status = node.status()
    assert [r["version"] for r in status["rolled_back"]] == ["v3"]
    assert "fell back" in status["rolled_back"][0]["reason"]
    assert status["booted"] == {"slot": "b", "version": "v2"}
    assert "v3" in node.log() and "rolled back" in node.log()

    outcome, candidate = node.updater().check()
    assert candidate is None and outcome.message == "up to date (v2)"
    assert "v3 failed here before; not trying it again" in node.log()
    assert not node.bootctl().states()["a"].bootable
    before = hashlib.sha256(slot_bytes(node, "a", SIZE)).hexdigest()
    node.updater().apply()
    assert hashlib.sha256(slot_bytes(node, "a", SIZE)).hexdigest() == before
    assert not node.reboot_marker.exists()


def test_status_and_apply_through_the_command_line(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    cli = [sys.executable, "-m", "distbuild.node.cli", "--root", str(node.root)]
    check = subprocess.run([*cli, "check", "--json"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["version"] == "v2"
    apply = subprocess.run([*cli, "apply", "--no-reboot"], capture_output=True, text=True)
    assert apply.returncode == 0, apply.stderr
    assert not node.reboot_marker.exists()
    status = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True)
    data = json.loads(status.stdout)
    assert data["pending"]["version"] == "v2" and data["pending"]["slot"] == "b"
    text = subprocess.run([*cli, "status"], capture_output=True, text=True).stdout
    assert "pending:    v2 in slot b (from v1)" in text


def test_a_bad_config_is_an_error_with_its_line(node: Node) -> None:
    path = node.root / "etc/distbuild/update.yaml"
    path.write_text("channel_url: http://127.0.0.1:1/\nreboot: sometimes\n")
    proc = subprocess.run(
        [sys.executable, "-m", "distbuild.node.cli", "--root", str(node.root), "status"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert f"error: {path}:2: reboot: must be one of immediate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refused_is_an_error_class_with_its_own_exit_code() -> None:
    assert Refused("x").exit_code not in (0, 1, 2)


def test_update_with_the_systemd_boot_backend(tmp_path: Path, chan: Channel, served: str) -> None:
    # The UEFI chain's real backend (boot counting in entry names) on a directory.
    node = Node(tmp_path / "uefi", arch="amd64", chain="systemd-boot")
    node.setup(served, chan.root_json, "v1")
    chan.publish("v2", arch="amd64", size=SIZE)
    assert node.updater().apply().rebooting
    assert slot_bytes(node, "b", SIZE) == payload("v2", "amd64", SIZE)
    bc = node.bootctl()
    assert bc.boot_order()[0] == "b"
    b = bc.states()["b"]
    assert (b.version, b.tries_left, b.good) == ("v2", 3, False)
    node.show("b", "v2")
    assert "updated from v1 to v2" in node.updater().mark_good().message
    assert node.bootctl().states()["b"].good
    assert node.status()["slots"]["a"]["good"], "the old slot stays as the fallback"
