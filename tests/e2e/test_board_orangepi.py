"""The orangepi-pc-qemu board end to end: a real board's boot chain in qemu's ``-M orangepi-pc``.

One SD card (the board's disk from ``distbuild image --board
orangepi-pc-qemu``; the only block device the machine has is that card,
``mmcblk0``): the H3 boot ROM loads nanopi_neo's SPL from 8 KiB on the card,
SPL loads U-Boot, distro boot runs distbuild's A/B script, which boots slot
a's kernel with the board's own device tree (``a/board.dtb``; U-Boot reports
the bytes it read) and console (``board.env``); the initramfs loads
sunxi-mmc, maps the dm-verity root and switches to it; 1.0.0 boots from A,
reaches the channel served over the board's emulated Ethernet (dwmac-sun8i on
qemu's user network, inside a network namespace of the test's) and is blessed.

Not in the suite: the update to 2.0.0 over that Ethernet and the fall back
from a failing release on this board. That story passes (commit a01a29a:
933 s alone, 1066 s in a full CI run), but with it the suite took 88 min,
against a 60-min target and CI's 90-min limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distbuild.channel.admin import create_channel
from distbuild.channel.publish import publish
from distbuild.core.arch import get_arch
from distbuild.core.run import run
from distbuild.disk.slots import disk_bootctl
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import Guest
from tests.conftest import REPO, Builder, NodeChannels, read_record
from tests.e2e.conftest import CHANNEL_PORT, FLEETLOCK_PORT, follow_args
from tests.support.channel import channel
from tests.support.netns import NetNs, netns
from tests.support.node import FaultServer, LockServer, fault_server, fleetlock_server

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

BOARD = "orangepi-pc-qemu"
ARCH = "armv7"
CHANNEL = "e2e-orangepi"  # its own: test_update.py publishes to e2e-armv7
NIC = "user"  # no model: the H3's own EMAC takes it
BOOT = 420.0  # SPL to "marked good": 4 emulated cores under TCG on a busy 2-core machine
INSTALL = 1500.0  # fetch and write a 70 MiB root image over the emulated EMAC and SD host
FAILED_TRY = 180.0  # SPL, U-Boot, kernel, initramfs, panic=5
ROUND = 90.0
RELEASE_KINDS = ("root", "kernel", "initrd", "boot", "dtb")


@dataclass
class Board:
    recipe: Recipe
    v1: Path  # the board build of 1.0.0 (its disk is the card)
    channels: NodeChannels
    workdir: Path

    def file(self, kind: str) -> Path:
        (path,) = [
            a["path"] for a in artifacts(self.v1) if a["kind"] == kind and a.get("board") == BOARD
        ]
        return self.v1 / path

    def publish(self) -> None:
        """1.0.0 into the board's channel: the node finds itself up to date."""
        publish(self.channels.repo, channel(CHANNEL), self.v1, self.channels.keys)


def artifacts(build: Path) -> list[dict[str, Any]]:
    return [a for a in read_record(build)["artifacts"] if a["arch"] == ARCH]


def board_follow_args(channels: NodeChannels) -> list[str]:
    """The e2e follow arguments, on this test's own channel."""
    create_channel(channels.repo, channel(CHANNEL), channels.keys)
    args = follow_args(channels, ARCH)
    args[args.index("--channel") + 1] = CHANNEL
    root = channels.repo / CHANNEL / "metadata" / "1.root.json"
    args[args.index("--trust-root") + 1] = str(root)
    return args


@pytest.fixture(scope="module")
def board(
    build_image: Builder, node_channels: NodeChannels, tmp_path_factory: pytest.TempPathFactory
) -> Board:
    # The node's board (update.yaml) picks the DTB its updates install.
    extra = [*board_follow_args(node_channels), "--update-setting", f"board={BOARD}"]
    extra += ["--board", BOARD]
    v1 = build_image("node", ARCH, version="1.0.0", extra=extra)
    recipe = load_recipe(REPO, get_arch(ARCH))
    return Board(recipe, v1, node_channels, tmp_path_factory.mktemp("orangepi"))


@contextmanager
def servers(ns: NetNs, repo: Path) -> Iterator[tuple[FaultServer, LockServer]]:
    """The channel and the FleetLock server, on 127.0.0.1 inside ``ns``."""
    with ExitStack() as stack:
        with ns.entered():
            srv = stack.enter_context(fault_server(repo, port=CHANNEL_PORT))
            lock = stack.enter_context(fleetlock_server(port=FLEETLOCK_PORT))
        yield srv, lock


def test_orangepi_boots_its_own_spl_uboot_dtb_and_verity_root_and_is_blessed(
    board: Board,
) -> None:
    started = time.monotonic()
    disk = board.workdir / "sd.img"
    run(["cp", "--sparse=always", board.file("disk"), disk])
    dtb_size = board.file("dtb").stat().st_size
    board.publish()
    timings: dict[str, float] = {}
    log = board.workdir / "console.log"
    with (
        netns(f"distbuild-e2e-opi-{os.getpid()}") as ns,
        servers(ns, board.channels.repo) as (_srv, _lock),
        log.open("w") as echo,
        Guest(board.recipe, disk, write=True, echo=echo, nic=NIC, wrap=ns.wrap, board=BOARD) as g,
    ):
        try:
            boot(g, dtb_size, timings)
        finally:
            print(f"{BOARD}: {timings}; console {log}")
    # The boot ROM, not qemu, loaded U-Boot: SPL ran before the A/B script.
    transcript = g.transcript
    assert transcript.index("U-Boot SPL") < transcript.index("distbuild: A/B boot script")
    assert "distbuild: board orangepi-pc-qemu" in transcript  # board.env was read
    states = disk_bootctl(disk, board.recipe).states()
    assert states["a"].good and states["a"].version == "1.0.0"
    print(f"{BOARD}: whole test {time.monotonic() - started:.0f}s")


def boot(g: Guest, dtb: int, timings: dict[str, float]) -> None:
    """The board's own boot chain, then 1.0.0 from A on the SD card, blessed."""
    timings["SPL"] = g.expect("U-Boot SPL", 60)
    timings["U-Boot"] = g.expect("Allwinner Technology", 60)
    g.expect("distbuild: trying slot a", 120)
    g.expect(f"{dtb} bytes read", 30)  # a/board.dtb
    timings["kernel"] = g.expect("Starting kernel", 120)
    g.expect("distbuild-initramfs: slot=a version=1.0.0", BOOT)
    timings["1.0.0 booted"] = g.expect(
        f"distbuild-os: booted slot=a version=1.0.0 arch={ARCH}", BOOT
    )
    timings["1.0.0 good"] = g.expect("distbuild-os: slot a marked good", BOOT)
