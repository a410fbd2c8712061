"""The node updater installs its board's device tree with the slot's kernel.

As tests/integration/test_node_update.py: the channel is written by the
project's own ``publish`` and served from 127.0.0.1, the TUF client is
python-tuf's ngclient, the boot control the real U-Boot backend on a
directory. The releases carry board files in the shared layout
(tests/support/boards.py): ``orangepi-pc-qemu`` has a DTB, ``qemu`` has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel.publish import publish
from distbuild.channel.serve import Server, serving
from distbuild.node.tufclient import Refused
from tests.support.boards import add_board_files, dtb_bytes
from tests.support.channel import channel
from tests.support.node import Channel, Node, make_channel, make_root_build, relabel

ARCH = "armv7"
SIZE = 256 << 10
OPI = "orangepi-pc-qemu"


def release(chan: Channel, version: str, opi_dtb: bool = True) -> None:
    """Publish a root release of ``version`` with disks for both boards (a DTB for OPI's)."""
    build = make_root_build(chan.builds, version, size=SIZE)
    add_board_files(build, ARCH, OPI, dtb=opi_dtb)
    add_board_files(build, ARCH, "qemu", dtb=False)
    publish(chan.repo, channel(chan.name), build, chan.keys)


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    release(c, "v1")
    return c


@pytest.fixture
def server(chan: Channel) -> Iterator[Server]:
    with serving(chan.repo) as s:
        yield s


def board_node(tmp_path: Path, chan: Channel, server: Server, board: str) -> Node:
    node = Node(tmp_path / board)
    node.setup(server.url, chan.root_json, "v1", board=board)
    return node


def dtb(node: Node, slot: str) -> bytes | None:
    path = node.boot_dir / slot / "board.dtb"
    return path.read_bytes() if path.exists() else None


def test_the_boards_dtb_goes_into_the_inactive_slot_and_a_stale_one_goes(
    tmp_path: Path, chan: Channel, server: Server
) -> None:
    node = board_node(tmp_path, chan, server, OPI)
    release(chan, "v2")
    assert node.updater().apply().rebooting
    assert dtb(node, "b") == dtb_bytes(OPI, "v2")
    assert dtb(node, "a") is None, "the running slot is never touched"
    assert node.boot_dir.joinpath("b/zImage").read_bytes() == b"kernel v2 armv7\n" * 64
    assert node.boot() == ("b", "v2")
    assert "updated from v1 to v2" in node.updater().mark_good().message

    release(chan, "v3")  # a new DTB for the other slot; b keeps its own
    node.updater().apply()
    assert dtb(node, "a") == dtb_bytes(OPI, "v3")
    assert dtb(node, "b") == dtb_bytes(OPI, "v2")
    assert node.boot() == ("a", "v3")
    node.updater().mark_good()

    release(chan, "v4", opi_dtb=False)  # no DTB for this board any more
    node.updater().apply()
    assert dtb(node, "b") is None, "v2's DTB must not boot v4's kernel"
    assert dtb(node, "a") == dtb_bytes(OPI, "v3")
    assert node.bootctl().states()["b"].version == "v4"


def test_a_board_without_a_dtb_installs_none_and_fetches_none(
    tmp_path: Path, chan: Channel, server: Server
) -> None:
    node = board_node(tmp_path, chan, server, "qemu")
    release(chan, "v2")
    server.traffic.clear()
    assert node.updater().apply().rebooting
    assert sorted(p.name for p in (node.boot_dir / "b").iterdir()) == [
        "bootargs.env",
        "initrd.img",
        "zImage",
    ]
    fetched = [t.path for t in server.traffic.requests]
    assert any(p.endswith(".root.img") for p in fetched)
    assert not any("board.dtb" in p or "/qemu/" in p for p in fetched)
    assert node.boot() == ("b", "v2")


def test_a_dtb_whose_bytes_differ_from_the_signed_ones_is_refused_before_writing(
    tmp_path: Path, chan: Channel, server: Server
) -> None:
    node = board_node(tmp_path, chan, server, OPI)
    release(chan, "v2")
    stored = chan.target_file(f"node/v2/{ARCH}/{OPI}/board.dtb")
    data = bytearray(stored.read_bytes())
    data[-2] ^= 0x01  # same length, one bit flipped on the server
    stored.write_bytes(bytes(data))
    with pytest.raises(Refused, match="not the ones the channel signed"):
        node.updater().apply()
    assert node.untouched("b") and dtb(node, "b") is None
    assert node.bootctl().boot_order() == ["a"]
    assert node.status()["last_result"]["ok"] is False


def test_a_dtb_signed_for_another_board_is_refused(
    tmp_path: Path, chan: Channel, server: Server
) -> None:
    node = board_node(tmp_path, chan, server, OPI)
    release(chan, "v2")
    # The index lists it under this board; its signed metadata says another.
    relabel(chan, f"node/v2/{ARCH}/{OPI}/board.dtb", board="bananapi")
    with pytest.raises(Refused, match="bananapi"):
        node.updater().apply()
    assert node.untouched("b") and dtb(node, "b") is None


def test_an_empty_dtb_is_refused(tmp_path: Path, chan: Channel, server: Server) -> None:
    node = board_node(tmp_path, chan, server, OPI)
    build = make_root_build(chan.builds, "v2", size=SIZE)
    add_board_files(build, ARCH, OPI, **{f"root/{OPI}/board.dtb": ("dtb", b"")})
    publish(chan.repo, channel(chan.name), build, chan.keys)
    with pytest.raises(Refused, match=r"board\.dtb is empty"):
        node.updater().apply()
    assert node.untouched("b") and dtb(node, "b") is None
