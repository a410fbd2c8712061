"""The payload is checked against its signed dm-verity tree before it reaches the slot.

Releases here are published as a real build makes them: root.img is data plus
the tree ``veritysetup format`` appends (the build's own ``add_verity``), and
boot.json, a signed target, carries the root hash. A server (real HTTP, on
127.0.0.1) then serves a same-length payload with one flipped byte: the
whole-file hash could only tell once every byte were in the slot, the tree
tells before the altered block is written.

Slot B is filled with other bytes first, so "nothing written" means the
device is byte-identical to what it held before the apply.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distbuild.channel.publish import publish
from distbuild.channel.serve import RepoHandler, Traffic
from distbuild.disk.rootimg import Verity, verify
from distbuild.node.tufclient import Refused
from distbuild.node.verity import BLOCK, tree_size
from tests.support.channel import channel
from tests.support.node import (
    SLOT_SIZE,
    Channel,
    FaultServer,
    Misbehave,
    Node,
    fault_server,
    make_channel,
    make_root_build,
)

SIZE = 4 << 20  # data: 1024 blocks; the tree: 8 level-0 blocks and the top block
BLOCKS = SIZE // BLOCK
LENGTH = SIZE + tree_size(BLOCKS)
ROOT = "node/v2/armv7/root.img"


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=SIZE, verity=True)
    c.publish("v2", size=SIZE, verity=True)
    return c


@contextmanager
def node_on(
    tmp_path: Path, chan: Channel, fault: Misbehave | None = None
) -> Iterator[tuple[Node, FaultServer]]:
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1")
        # Slot B holds something (an older release, say); nothing may change it.
        node.device("b").write_bytes(os.urandom(SLOT_SIZE))
        yield node, server


def served(chan: Channel) -> bytes:
    return chan.target_file(ROOT).read_bytes()


def flip(chan: Channel, at: int) -> None:
    """One flipped byte in the served root.img: same length, signed hash no longer met."""
    path = chan.target_file(ROOT)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.unlink()  # published files may be hard links shared with the build
    path.write_bytes(bytes(data))


def slot_b(node: Node) -> bytes:
    return node.device("b").read_bytes()


def assert_refused(node: Node, words: str) -> None:
    with pytest.raises(Refused) as e:
        node.updater().apply()
    assert words in e.value.message, e.value.message
    status = node.status()
    assert not status["last_result"]["ok"] and words in status["last_result"]["message"]
    assert words in node.log()
    assert status["slots"]["b"]["bootable"] is False
    assert status["boot_order"] == ["a"]
    assert not node.reboot_marker.exists()
    assert node.boot() == ("a", "v1")


def root_requests(server: FaultServer) -> list[int]:
    return [t.status for t in server.traffic.requests if t.path.endswith("root.img")]


def test_update_checks_the_tree_then_writes_a_slot_veritysetup_accepts(
    tmp_path: Path, chan: Channel
) -> None:
    image = served(chan)
    assert len(image) == LENGTH
    with node_on(tmp_path, chan) as (node, server):
        assert node.updater().apply().rebooting
        # The tree (a Range from the hash offset), then the data up to it; each byte once.
        assert root_requests(server) == [206, 206]
        assert server.sent() <= LENGTH + 4096  # + headers
    written = slot_b(node)
    assert written[:LENGTH] == image
    assert "hash tree verified against the signed root hash" in node.log()
    boot = json.loads(chan.target_file("node/v2/armv7/boot.json").read_bytes())
    v = boot["verity"]
    assert verify(node.device("b"), Verity(v["roothash"], v["salt"], v["data_blocks"]))
    assert node.boot() == ("b", "v2")


def test_a_flipped_byte_in_the_first_data_block_is_refused_before_writing(
    tmp_path: Path, chan: Channel
) -> None:
    flip(chan, 100)
    with node_on(tmp_path, chan) as (node, _):
        before = slot_b(node)
        assert_refused(node, "data block 0 (byte 0) does not match the signed dm-verity")
        assert slot_b(node) == before, "a byte reached the slot before the refusal"


def test_a_flipped_byte_in_a_middle_block_never_reaches_the_slot(
    tmp_path: Path, chan: Channel
) -> None:
    bad = BLOCKS // 2 + 3
    good = served(chan)
    flip(chan, bad * BLOCK + 1234)
    with node_on(tmp_path, chan) as (node, server):
        before = slot_b(node)
        assert_refused(node, f"data block {bad} (byte {bad * BLOCK}) does not match")
        after = slot_b(node)
        # The blocks before it were checked and written; the altered one never was.
        assert after[: bad * BLOCK] == good[: bad * BLOCK]
        assert after[bad * BLOCK :] == before[bad * BLOCK :]
        # Verified progress is kept: once the server is honest again the install
        # resumes from its last checkpoint instead of starting over.
        offset = node.status()["download"]["offset"]
        assert offset == bad * BLOCK
        path = chan.target_file(ROOT)
        path.unlink()
        path.write_bytes(good)
        server.traffic.clear()
        assert node.updater().apply().rebooting
        assert f"resuming {ROOT} at byte {offset}" in node.log()
        assert server.sent() <= LENGTH - offset + 4096  # the tree again, the rest once
    assert slot_b(node)[:LENGTH] == good
    assert node.boot() == ("b", "v2")


@pytest.mark.parametrize(
    ("where", "at"),
    [
        ("top block, a digest", 5),
        ("top block, its zero padding", 8 * 32 + 7),  # 8 level-0 blocks: 8 digests
        ("level 0, the last digest", tree_size(BLOCKS) - 1),
    ],
)
def test_a_flipped_byte_in_the_hash_tree_is_refused_before_writing(
    tmp_path: Path, chan: Channel, where: str, at: int
) -> None:
    flip(chan, SIZE + at)
    with node_on(tmp_path, chan) as (node, server):
        before = slot_b(node)
        assert_refused(node, "hash tree does not match the signed root hash")
        assert slot_b(node) == before, f"{where}: a byte reached the slot"
        # Only the tree was fetched: the data was never asked for.
        assert root_requests(server) == [206]


def test_a_dropped_connection_resumes_block_aligned(tmp_path: Path, chan: Channel) -> None:
    # The first root.img request is the tree's; the second (the data) is cut
    # mid-block at 40%, the third resumes it.
    fault = Misbehave(cut=int(SIZE * 0.4) + 1000, times=2)
    with node_on(tmp_path, chan, fault) as (node, server):
        assert node.updater().apply().rebooting
        assert root_requests(server) == [206, 206, 206]
        assert server.sent() <= 1.05 * LENGTH
    assert "retrying from byte" in node.log()
    assert slot_b(node)[:LENGTH] == served(chan)
    assert node.boot() == ("b", "v2")


def test_power_cut_mid_write_then_resume_stays_within_5_percent(
    tmp_path: Path, chan: Channel
) -> None:
    # ~2 s for the payload, so the updater can be killed in the middle of it.
    fault = Misbehave(rate=SIZE / 2)
    with node_on(tmp_path, chan, fault) as (node, server):
        offset = node.cut_apply(SIZE // 2)
        assert SIZE // 2 <= offset < SIZE and offset % BLOCK == 0, offset
        assert node.boot() == ("a", "v1")

        fault.rate = None
        assert node.updater().apply().rebooting
        # Killed: tree + data; resumed: the tree again (it is small) + the rest.
        assert root_requests(server) == [206, 206, 206, 206]
        total = server.sent()
    assert total <= 1.05 * LENGTH, (total, LENGTH)
    assert f"resuming {ROOT} at byte" in node.log()
    assert slot_b(node)[:LENGTH] == served(chan)
    assert node.boot() == ("b", "v2")


def test_a_tampered_kernel_is_refused_before_the_slot_is_touched(
    tmp_path: Path, chan: Channel
) -> None:
    path = chan.target_file("node/v2/armv7/linux")
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data.replace(b"kernel", b"KERNEL"))
    with node_on(tmp_path, chan) as (node, server):
        before = slot_b(node)
        assert_refused(node, "not the ones the channel signed")
        assert slot_b(node) == before
        assert root_requests(server) == []


def publish_edited_boot(
    chan: Channel, version: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    """Publish a release whose (signed) boot.json was changed by ``edit``: a broken build."""
    build = make_root_build(chan.builds, version, size=SIZE, verity=True)
    path = build / "armv7/root/boot.json"
    meta = json.loads(path.read_bytes())
    edit(meta)
    blob = json.dumps(meta).encode()
    path.write_bytes(blob)
    record = json.loads((build / "build.json").read_bytes())
    for art in record["artifacts"]:
        if art["path"].endswith("boot.json"):
            art["sha256"], art["size"] = hashlib.sha256(blob).hexdigest(), len(blob)
    (build / "build.json").write_text(json.dumps(record))
    publish(chan.repo, channel(chan.name), build, chan.keys)


def test_verity_parameters_that_do_not_describe_the_image_are_refused(
    tmp_path: Path,
) -> None:
    chan = make_channel(tmp_path)
    chan.publish("v1", size=SIZE, verity=True)

    def fewer_blocks(meta: dict[str, Any]) -> None:
        v = meta["verity"]
        v["data_blocks"] -= 1
        v["hash_offset"] -= BLOCK
        meta["cmdline"] = meta["cmdline"].replace(
            f"verity_blocks={BLOCKS}", f"verity_blocks={BLOCKS - 1}"
        )

    publish_edited_boot(chan, "v2", fewer_blocks)
    with node_on(tmp_path, chan) as (node, server):
        before = slot_b(node)
        assert_refused(node, "describe")
        assert slot_b(node) == before and root_requests(server) == []


def test_a_command_line_naming_another_root_hash_is_refused(tmp_path: Path) -> None:
    chan = make_channel(tmp_path)
    chan.publish("v1", size=SIZE, verity=True)

    def other_hash(meta: dict[str, Any]) -> None:
        meta["cmdline"] = meta["cmdline"].replace(meta["verity"]["roothash"], "ab" * 32)

    publish_edited_boot(chan, "v2", other_hash)
    with node_on(tmp_path, chan) as (node, _):
        before = slot_b(node)
        assert_refused(node, "the kernel command line's distbuild.verity=abab")
        assert slot_b(node) == before


class _NoRangeHandler(RepoHandler):
    """A server without Range support: every answer is the whole file (200)."""

    def send_head(self) -> Any:
        return SimpleHTTPRequestHandler.send_head(self)


def test_a_server_without_range_support_still_updates(tmp_path: Path, chan: Channel) -> None:
    traffic = Traffic()
    handler = type("Handler", (_NoRangeHandler,), {"traffic": traffic})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(chan.repo)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        node = Node(tmp_path / "node")
        node.setup(f"http://{host!s}:{port}", chan.root_json, "v1")
        assert node.updater().apply().rebooting
        statuses = [t.status for t in traffic.requests if t.path.endswith("root.img")]
        assert statuses == [200, 200]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert "server ignored the range request" in node.log()
    assert slot_b(node)[:LENGTH] == served(chan)
    assert node.boot() == ("b", "v2")
