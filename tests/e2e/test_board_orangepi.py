"""The orangepi-pc-qemu board end to end: a real board's boot chain in qemu's ``-M orangepi-pc``.

One story on one SD card (the board's disk from ``distbuild image --board
orangepi-pc-qemu``; the only block device the machine has is that card,
``mmcblk0``): the H3 boot ROM loads nanopi_neo's SPL from 8 KiB on the card,
SPL loads U-Boot, distro boot runs distbuild's A/B script, which boots slot
a's kernel with the board's own device tree (``a/board.dtb``; U-Boot reports
the bytes it read) and console (``board.env``); the initramfs loads
sunxi-mmc, maps the dm-verity root and switches to it.

1. 1.0.0 boots from A and is blessed.
2. 2.0.0, published meanwhile, is fetched over the board's emulated Ethernet
   (dwmac-sun8i on qemu's user network, inside a network namespace of the
   test's, as in test_update.py), written into B with its board DTB, FleetLock
   taken, reboot, ``booted slot=b version=2.0.0``, blessed, lock released.
3. 3.0.0, whose init fails, is installed into A and boots; it fails every
   try and U-Boot falls back to 2.0.0 in B by itself.

1.0.0 and 2.0.0 are board builds of their own (the root image says its
version when it boots); 3.0.0 is 2.0.0's payload under another version with a
failing init (as test_update.py makes its 3.0.0).

The story is long (one emulated H3 core, an emulated SD host: 790 s
measured beside a full suite's update story) and uses one core, so it runs
in the background from the session's start, its qemu at a lower priority,
beside the other e2e tests (``background_story``, tests/e2e/conftest.py);
the test checks what it left. The board boots Linux on one of the H3's four cores
(its ``kernel_args``): with four, TCG spun arm32's stop_machine into RCU
stalls, the emulated SD card wrote ~200 KB/s and a boot took up to 7 minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
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
from tests.conftest import REPO, BuildKey, Builds, NodeChannels, build_key, read_record
from tests.e2e.conftest import CHANNEL_PORT, FLEETLOCK_PORT, Stories, follow_args
from tests.support.channel import channel
from tests.support.netns import NetNs, netns
from tests.support.node import FaultServer, LockServer, fault_server, fleetlock_server
from tests.support.node_console import console_tail
from tests.support.release import release_of

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

BOARD = "orangepi-pc-qemu"
ARCH = "armv7"
CHANNEL = "e2e-orangepi"  # its own: test_update.py publishes to e2e-armv7
NIC = "user"  # no model: the H3's own EMAC takes it
# Deadlines for a story in the background: its qemu yields to the foreground
# tests' guests, three at once for a few minutes (measured: 174 s to "booted",
# 183 s to write B, beside a full suite's update story at nice 19).
BOOT = 600.0  # SPL to "marked good" under TCG on a busy 2-core machine
INSTALL = 900.0  # fetch and write a 70 MiB root image over the emulated EMAC and SD host
FAILED_TRY = 300.0  # SPL, U-Boot, kernel, initramfs, panic=5
ROUND = 120.0
STORY = 5400.0  # the whole story's deadline, past every step's own
NICE = 10  # the story's qemu yields to the foreground tests' guests
RELEASE_KINDS = ("root", "kernel", "initrd", "boot", "dtb")


@dataclass
class Board:
    recipe: Recipe
    v1: Path  # the board build of 1.0.0 (its disk is the card)
    v2: Path  # 2.0.0, built the same way: its root says 2.0.0 when it boots
    channels: NodeChannels
    workdir: Path

    def file(self, kind: str) -> Path:
        (path,) = [
            a["path"] for a in artifacts(self.v1) if a["kind"] == kind and a.get("board") == BOARD
        ]
        return self.v1 / path

    def publish(self, version: str, broken_init: bool = False) -> None:
        """1.0.0 and 2.0.0 as built; any other version relabels 2.0.0 (as test_update's
        3.0.0). A release holds the arch's root payload and this board's DTB."""
        build = self.v1 if version == "1.0.0" else self.v2
        out = self.workdir / f"release-{version}"
        kept = release_of(
            build,
            out,
            version,
            lambda a: (
                a["arch"] == ARCH and a["kind"] in RELEASE_KINDS and a.get("board", BOARD) == BOARD
            ),
            broken_init,
        )
        assert {a["kind"] for a in kept} == set(RELEASE_KINDS), kept
        publish(self.channels.repo, channel(CHANNEL), out, self.channels.keys)


@dataclass
class Outcome:
    """What the story left for the test to check."""

    disk: Path
    transcript: str
    power_cycles: int
    timings: dict[str, float] = field(default_factory=dict)
    served: int = 0


def artifacts(build: Path) -> list[dict[str, Any]]:
    return [a for a in read_record(build)["artifacts"] if a["arch"] == ARCH]


def board_follow_args(channels: NodeChannels) -> list[str]:
    """The e2e follow arguments, on this test's own channel."""
    root = channels.repo / CHANNEL / "metadata" / "1.root.json"
    if not root.exists():
        create_channel(channels.repo, channel(CHANNEL), channels.keys)
    args = follow_args(channels, ARCH)
    args[args.index("--channel") + 1] = CHANNEL
    args[args.index("--trust-root") + 1] = str(root)
    return args


def board_build(channels: NodeChannels, version: str) -> BuildKey:
    """A board build; the node's board (update.yaml) picks the DTB its updates install."""
    extra = [*board_follow_args(channels), "--update-setting", f"board={BOARD}", "--board", BOARD]
    return build_key("node", ARCH, version, extra=extra)


def ahead_builds(channels: NodeChannels, _project: Path | None = None) -> list[BuildKey]:
    """Queued first when the session starts (tests/e2e/conftest.py)."""
    return [board_build(channels, "1.0.0"), board_build(channels, "2.0.0")]


@contextmanager
def servers(ns: NetNs, repo: Path) -> Iterator[tuple[FaultServer, LockServer]]:
    """The channel and the FleetLock server, on 127.0.0.1 inside ``ns``."""
    with ExitStack() as stack:
        with ns.entered():
            srv = stack.enter_context(fault_server(repo, port=CHANNEL_PORT))
            lock = stack.enter_context(fleetlock_server(port=FLEETLOCK_PORT))
        yield srv, lock


def wrap(ns: NetNs) -> list[str]:
    """qemu in the namespace, at a lower priority: the tests in the foreground
    keep their pace, the story takes the core they leave idle."""
    return ["nice", "-n", str(NICE), *ns.wrap]


def background_story(builds: Builds, channels: NodeChannels, workdir: Path) -> Outcome:
    """The whole story, on a thread of its own from the session's start."""
    v1, v2 = builds.many(*ahead_builds(channels))
    board = Board(load_recipe(REPO, get_arch(ARCH)), v1, v2, channels, workdir)
    disk = workdir / "sd.img"
    run(["cp", "--sparse=always", board.file("disk"), disk])
    dtb_size = board.file("dtb").stat().st_size
    board.publish("1.0.0")
    board.publish("2.0.0")  # waiting for the node's first round
    log = workdir / "console.log"
    timings: dict[str, float] = {}
    with (
        netns(f"distbuild-e2e-opi-{os.getpid()}") as ns,
        servers(ns, channels.repo) as (srv, lock),
        log.open("w") as echo,
        Guest(board.recipe, disk, write=True, echo=echo, nic=NIC, wrap=wrap(ns), board=BOARD) as g,
    ):
        try:
            story(board, g, lock, dtb_size, timings)
        except BaseException as e:
            tail = console_tail(BOARD, g.transcript)
            raise AssertionError(f"{e}\n{BOARD}: {timings}; console {log}\n{tail}") from e
        served = srv.sent()
    return Outcome(disk, g.transcript, g.power_cycles, timings, served)


def test_orangepi_boots_updates_over_its_ethernet_and_falls_back(
    background_stories: Stories,
) -> None:
    waited = time.monotonic()
    out: Outcome = background_stories.result(__name__, STORY)
    print(f"{BOARD}: {out.timings}; root.img bytes served {out.served}")
    print(f"{BOARD}: the test waited {time.monotonic() - waited:.0f}s for the story")
    transcript = out.transcript
    recipe = load_recipe(REPO, get_arch(ARCH))
    tries = recipe.boot_tries
    assert transcript.count("distbuild-initramfs: slot=a version=3.0.0") == tries
    assert "booted slot=a version=3.0.0" not in transcript
    assert "distbuild: board orangepi-pc-qemu" in transcript  # board.env was read
    # Every boot went through the board's SPL (the boot ROM, not qemu, loaded
    # U-Boot); every reset the guest asked for (two updates, the failed tries)
    # was a power cycle: qemu 7.2 emulates no H3 watchdog.
    assert transcript.count("U-Boot SPL") == transcript.count("distbuild: A/B boot script")
    assert out.power_cycles == 2 + tries
    bc = disk_bootctl(out.disk, recipe)
    states = bc.states()
    assert not states["a"].bootable and states["a"].tries_left == 0
    assert states["b"].good and states["b"].version == "2.0.0"
    assert bc.boot_order() == ["b"]


def story(board: Board, g: Guest, lock: LockServer, dtb: int, timings: dict[str, float]) -> None:
    """The console, boot by boot; ``dtb``: the board DTB's size, which U-Boot reports."""
    # 1. The board's own boot chain, then 1.0.0 from A on the SD card, blessed.
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

    # 2. 2.0.0 over the EMAC into B (mmcblk0p3), its DTB with it; reboot under the lock.
    timings["2.0.0 writing"] = g.expect("writing node 2.0.0 into slot b (/dev/mmcblk0p3)", ROUND)
    timings["2.0.0 reboot"] = g.expect("distbuild: trying slot b", INSTALL)
    g.expect(f"{dtb} bytes read", 30)  # b/board.dtb, installed by the updater
    g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={ARCH}", BOOT)
    g.expect("updated from 1.0.0 to 2.0.0", BOOT)
    timings["2.0.0 good"] = g.expect("distbuild-os: slot b marked good", BOOT)
    assert [c.path for c in lock.calls] == ["/v1/pre-reboot", "/v1/steady-state"]
    assert lock.holder == {}

    # 3. A release whose init fails: A fails its tries, U-Boot falls back to B.
    board.publish("3.0.0", broken_init=True)
    g.expect("writing node 3.0.0 into slot a", ROUND)
    for _ in range(board.recipe.boot_tries):
        g.expect("distbuild-initramfs: slot=a version=3.0.0", INSTALL + FAILED_TRY)
    g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={ARCH}", FAILED_TRY + BOOT)
    timings["fell back, 2.0.0 good"] = g.expect("distbuild-os: slot b marked good", BOOT)
    g.expect("rolled back: 3.0.0", ROUND)
