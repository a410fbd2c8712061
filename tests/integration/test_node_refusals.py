"""What the updater refuses, with the reason in ``status`` and in the log.

Each case is a real channel (the project's ``publish``) served over HTTP and
changed the way a hostile server or a broken publish would change it. Unless
stated otherwise the slot device must still be all zeros afterwards: refused
before the first byte reached it. In every case slot B stays unbootable, so
the next boot is the running version in slot A.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from distbuild.channel.serve import serving
from distbuild.node.tufclient import Refused
from tests.support.node import SLOT_SIZE, Channel, Node, make_channel, relabel

SIZE = 1 << 20
ROOT = "node/v2/armv7/root.img"


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE)
    return c


@pytest.fixture
def node(tmp_path: Path, chan: Channel) -> Iterator[Node]:
    with serving(chan.repo) as server:
        n = Node(tmp_path / "node")
        n.setup(server.url, chan.root_json, "v1")
        yield n


def assert_refused(node: Node, words: str, *, untouched: bool = True) -> None:
    with pytest.raises(Refused) as e:
        node.updater().apply()
    assert words in e.value.message
    status = node.status()
    result = status["last_result"]
    assert result is not None and not result["ok"] and words in result["message"]
    assert words in node.log()
    assert not node.reboot_marker.exists()
    assert status["slots"]["b"]["bootable"] is False
    assert status["boot_order"] == ["a"]
    if untouched:
        assert node.untouched("b"), "a byte reached the slot before the refusal"
    assert node.boot() == ("a", "v1")


def test_expired_timestamp(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE, now=datetime.now(UTC) - timedelta(days=3))
    assert_refused(node, "expired metadata")


def test_metadata_rollback(node: Node, chan: Channel) -> None:
    meta = chan.repo / chan.name / "metadata"
    old = (meta / "timestamp.json").read_bytes()
    chan.publish("v2", size=SIZE)
    node.updater().check()  # the node has now seen the newer timestamp
    (meta / "timestamp.json").write_bytes(old)  # the server replays the old one
    assert_refused(node, "version went back")


def test_an_older_release_than_the_running_one(tmp_path: Path, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    with serving(chan.repo) as server:
        node = Node(tmp_path / "v5")
        node.setup(server.url, chan.root_json, "v5")
        outcome = node.updater().apply()
        assert not outcome.ok
        assert "refusing v2: older than the running v5" in outcome.message
        assert "older than the running v5" in node.status()["last_result"]["message"]
        assert node.untouched("b") and not node.reboot_marker.exists()
        # A person can still ask for it.
        outcome = node.updater().apply(allow_downgrade=True)
        assert outcome.rebooting and node.boot() == ("b", "v2")


def test_payload_for_another_arch(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    relabel(chan, ROOT, arch="arm64")
    assert_refused(node, "is signed as arch 'arm64', this node needs 'armv7'")


def test_payload_for_another_board(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    relabel(chan, ROOT, boards="bananapi-m1,bananapi-m2-zero")
    assert_refused(node, "is for board(s) bananapi-m1, bananapi-m2-zero")
    node.config["board"] = "bananapi-m1"
    node.write_config()
    assert node.updater().apply().rebooting


def test_server_sends_more_than_the_signed_length(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    with chan.target_file(ROOT).open("ab") as f:
        f.write(b"\0" * 4096)
    assert_refused(node, "more than the")


def test_tampered_payload(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    served = chan.target_file(ROOT)
    data = bytearray(served.read_bytes())
    data[SIZE // 2] ^= 0xFF
    served.unlink()  # published files may be hard links shared with the build
    served.write_bytes(bytes(data))
    # Same length: only the hash can tell, and it does before the slot is flipped.
    assert_refused(node, "tampered or corrupted", untouched=False)
    assert node.updater().store.progress() is None


def test_tampered_kernel(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SIZE)
    served = chan.target_file("node/v2/armv7/linux")
    data = served.read_bytes()
    served.unlink()
    served.write_bytes(data.replace(b"kernel", b"KERNEL"))
    assert_refused(node, "not the ones the channel signed", untouched=False)


def test_payload_larger_than_the_slot(node: Node, chan: Channel) -> None:
    chan.publish("v2", size=SLOT_SIZE + 4096)
    assert_refused(node, "larger than slot b")


@pytest.mark.parametrize("role", ["timestamp", "targets"])
def test_a_damaged_channel_is_refused(node: Node, chan: Channel, role: str) -> None:
    chan.publish("v2", size=SIZE)
    meta = chan.repo / chan.name / "metadata"
    if role == "timestamp":
        path = meta / "timestamp.json"
    else:
        path = max(meta.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    text = path.read_text()
    key = '"expires":"'
    at = text.index(key) + len(key) + 3
    # One digit of the expiry year, same length: only the signature can tell.
    path.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1 :])
    assert_refused(node, "fails TUF verification")
