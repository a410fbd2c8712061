"""The node updater end to end: a booted node follows its channel by itself.

Per arch, one story on one disk, the three arches at once (each is mostly
a qemu process waiting on its guest; one thread and one namespace per arch) (the session's 1.0.0 node build, which bakes
in the arch's e2e channel, a 3 s poll and the FleetLock reboot policy; see
``build_node`` in tests/e2e/conftest.py). The channel and a FleetLock server
run in this process, bound to 127.0.0.1 of a network namespace the test
makes; qemu runs in that namespace with a user-mode network, so the guest
reaches them as 10.0.2.2 and nothing else. Nothing in the guest is driven by
hand: ``distbuild-update run`` (respawned by init) polls, installs, takes the
lock, reboots; the health check blesses; each boot prints ``status``.

1. 1.0.0 boots from A and is blessed; the daemon finds nothing newer.
2. Refused, each before a byte reaches slot B, with its reason on the
   console and in ``status``: replayed (older) timestamp, expired timestamp,
   a tampered payload (caught at its first data block by the signed verity
   tree), a payload signed for another arch, a server sending more than
   signed. No refusal asks for the reboot lock.
3. 2.0.0, genuine: installed into B, FleetLock taken, reboot, ``booted slot=b
   version=2.0.0``, ``slot b marked good``, lock released.
   2.5.0, whose containerd cannot start (its config.toml does not parse): installed
   into A, booted; its health check fails naming containerd and the node rolls
   back to 2.0.0 in B by itself (no boot counting needed); ``status`` records it.
4. Another node holds the reboot lock; 3.0.0 (whose init fails) is published
   and served slowly; the power is cut mid-write of slot A. The next boot
   starts its RTC long before the image's epoch (a board without an RTC
   battery): rcS moves the clock to the newest release time the node
   verified (after the epoch) before the updater applies anything. It is
   2.0.0 from B again, B byte-for-byte the signed image; the download
   resumes with Range (at most 1.05 times the payload fetched in all); the node waits for
   the lock without rebooting; once the lock is free it reboots into 3.0.0,
   which fails its tries, and the boot loader falls back to 2.0.0 in B by
   itself. ``status`` reports 3.0.0 rolled back and it is not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from distbuild.channel.admin import refresh_channel
from distbuild.channel.publish import publish
from distbuild.core.arch import get_arch
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_sha256
from distbuild.disk.slots import disk_bootctl
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import Guest
from tests.conftest import EPOCH, REPO, NodeChannels, read_record
from tests.e2e.conftest import CHANNEL_PORT, FLEETLOCK_PORT, NodeBuilds, Stories
from tests.support.channel import channel
from tests.support.netns import NIC, NetNs, netns
from tests.support.node import (
    Channel,
    FaultServer,
    LockServer,
    Misbehave,
    fault_server,
    fleetlock_server,
    relabel,
)
from tests.support.node_console import assert_services_up, console_tail, rtc_behind_epoch
from tests.support.release import release_of

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

BOOT = 150.0  # one good boot under TCG on a busy 2-core machine
# A reboot the node decides by itself (rollback): its shutdown, then a boot,
# while the other two arches' guests and the host's release signing share the
# two cores (a CI run timed out at 150 s on armv7 here).
REBOOT = 360.0
SETTLE = 1800.0  # at most, for the background stories to end before the three guests start
FAILED_TRY = 60.0  # one failing try: firmware, kernel, initramfs, panic=5
ROUND = 90.0  # one daemon round: poll interval, TUF refresh, a decision
INSTALL = 300.0  # fetch, verify and write a root image under TCG
HEALTH_WAIT = 130.0  # the health check waits 120 s at most for containerd and sshd
ROOT_KINDS = ("root", "kernel", "initrd", "boot")
ARCHES = ("amd64", "arm64", "armv7")
SLOW_RATE = 1 << 20  # bytes/s while the power is about to be cut
TAMPERED = "tampered"


@dataclass
class Story:
    arch: str
    recipe: Recipe
    v1: Path
    v2: Path
    bad: Path  # 2.5.0, whose containerd cannot start
    chan: Channel
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)
    current: Guest | None = None  # the guest that runs now, for the failure's text

    def release(self, build: Path, version: str, broken_init: bool = False) -> Path:
        """A build directory with only this arch's root output, as a release to publish.

        ``broken_init``: the boot entry starts /bin/false as init (a release
        that passes every check on the server and fails on the node).
        """
        out = self.workdir / f"release-{version}"
        kept = release_of(
            build,
            out,
            version,
            lambda a: a["arch"] == self.arch and a["kind"] in ROOT_KINDS,
            broken_init,
        )
        assert len(kept) == len(ROOT_KINDS), kept
        return out

    def publish(self, release: Path, now: datetime | None = None) -> None:
        publish(self.chan.repo, channel(self.chan.name), release, self.chan.keys, now=now)

    def refresh(self) -> None:
        refresh_channel(self.chan.repo, channel(self.chan.name), self.chan.keys, force=True)

    def root_path(self, version: str) -> str:
        return f"node/{version}/{self.arch}/root.img"

    def disk(self) -> Path:
        record = read_record(self.v1)
        (rel,) = [
            a["path"] for a in record["artifacts"] if a["kind"] == "disk" and a["arch"] == self.arch
        ]
        copy = self.workdir / "node.img"
        run(["cp", "--sparse=always", self.v1 / rel, copy])
        return copy

    @contextmanager
    def guest(
        self, disk: Path, ns: NetNs, name: str, extra: tuple[str, ...] = ()
    ) -> Iterator[Guest]:
        log = self.workdir / f"{name}.console.log"
        with (
            log.open("w") as echo,
            Guest(
                self.recipe, disk, write=True, echo=echo, nic=NIC, wrap=ns.wrap, extra=extra
            ) as g,
        ):
            self.current = g
            yield g


# Built before the module runs (tests/e2e/conftest.py starts them in the background).
NODE_BUILDS = [(arch, version) for arch in ARCHES for version in ("1.0.0", "2.0.0")]
BAD_CONTAINERD_BUILDS = ARCHES  # 2.5.0, whose containerd config does not parse


@pytest.fixture(scope="module")
def stories(
    build_node: NodeBuilds,
    node_channels: NodeChannels,
    tmp_path_factory: pytest.TempPathFactory,
    background_stories: Stories,
) -> list[Story]:
    builds = build_node.many(*NODE_BUILDS)
    background_stories.settle(SETTLE)  # three guests need both cores
    out = []
    for i, arch in enumerate(ARCHES):
        v1, v2 = builds[2 * i : 2 * i + 2]
        bad = build_node.bad_containerd(arch)
        assert bad is not None
        workdir = tmp_path_factory.mktemp(f"update-{arch}")
        chan = Channel(node_channels.repo, node_channels.keys, workdir, node_channels.name(arch))
        out.append(Story(arch, load_recipe(REPO, get_arch(arch)), v1, v2, bad, chan, workdir))
    return out


def test_nodes_update_refuse_roll_back_and_survive_a_power_cut(stories: list[Story]) -> None:
    """The three arches' stories at once: each is mostly one qemu waiting on its guest."""
    failures: dict[str, str] = {}

    def one(story: Story) -> None:
        try:
            with netns(f"distbuild-e2e-{story.arch}-{os.getpid()}") as ns:
                node_story(story, ns)
        except BaseException:
            failures[story.arch] = traceback.format_exc()
            if story.current is not None:
                failures[story.arch] += console_tail(story.arch, story.current.transcript)

    threads = [threading.Thread(target=one, args=(s,), name=s.arch) for s in stories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for story in stories:
        print(f"{story.arch}: {story.timings}")
    if failures:
        pytest.fail(
            "\n".join(
                f"--- {arch} (console logs in {s.workdir}):\n{text}"
                for arch, text in failures.items()
                for s in stories
                if s.arch == arch
            ),
            pytrace=False,
        )


@contextmanager
def servers(ns: NetNs, repo: Path) -> Iterator[tuple[FaultServer, LockServer]]:
    """The channel and the FleetLock server, on 127.0.0.1 inside ``ns``."""
    with ExitStack() as stack:
        with ns.entered():
            fault = Misbehave(path=r"root\.img$")
            channel_server = stack.enter_context(fault_server(repo, fault, port=CHANNEL_PORT))
            lock_server = stack.enter_context(fleetlock_server(port=FLEETLOCK_PORT))
        yield channel_server, lock_server


def replace_file(path: Path, data: bytes) -> None:
    """Swap the served file at once (published files are hard links to builds)."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(data)
    tmp.replace(path)


def node_story(story: Story, ns: NetNs) -> None:
    s, chan = story, story.chan
    meta = chan.repo / chan.name / "metadata"
    s.publish(s.release(s.v1, "1.0.0"))
    first_timestamp = (meta / "timestamp.json").read_bytes()
    s.refresh()  # the node will first see a newer timestamp than this one
    disk = s.disk()

    with servers(ns, chan.repo) as (srv, lock):
        with s.guest(disk, ns, "run1") as g:
            # 1. A fresh node: 1.0.0 from A, blessed, nothing newer.
            g.expect(f"distbuild-os: booted slot=a version=1.0.0 arch={s.arch}", BOOT)
            s.timings["services up"] = g.expect("distbuild-os: services up", BOOT)
            s.timings["1.0.0 good"] = g.expect("distbuild-os: slot a marked good", BOOT)
            assert_services_up(g.transcript, "a")
            g.expect("distbuild-update: up to date (1.0.0)", ROUND)

            # 2. Refusals, each at the next daemon round.
            current_timestamp = (meta / "timestamp.json").read_bytes()
            replace_file(meta / "timestamp.json", first_timestamp)
            g.expect("metadata version went back", ROUND)
            replace_file(meta / "timestamp.json", current_timestamp)

            v2 = s.release(s.v2, "2.0.0")
            s.publish(v2, now=datetime.now(UTC) - timedelta(days=3))
            g.expect("expired metadata", ROUND)

            served = chan.target_file(s.root_path("2.0.0"))
            genuine = served.read_bytes()
            tampered = bytearray(genuine)
            tampered[2048] ^= 0x01  # in the first data block
            replace_file(served, bytes(tampered))
            s.refresh()  # valid metadata again; the bytes behind it are not
            g.expect(TAMPERED, ROUND)

            relabel(chan, s.root_path("2.0.0"), arch="s390x")
            g.expect("is signed as arch 's390x'", ROUND)
            relabel(chan, s.root_path("2.0.0"), arch=s.arch)  # still tampered: still refused

            replace_file(served, genuine + b"\0" * 4096)
            s.timings["refusals done"] = g.expect("more than the", ROUND)
            assert lock.calls == [], "a refused release asked for the reboot lock"

            # 3. The genuine release: installed into B, lock, reboot, blessed, unlocked.
            replace_file(served, genuine)
            g.expect("writing node 2.0.0 into slot b", ROUND)
            g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={s.arch}", INSTALL + BOOT)
            assert [c.path for c in lock.calls] == ["/v1/pre-reboot"]
            (me,) = lock.holder.values()
            g.expect("updated from 1.0.0 to 2.0.0", BOOT)
            g.expect("FleetLock reboot lock released", 10)
            s.timings["2.0.0 good"] = g.expect("distbuild-os: slot b marked good", 10)
            assert [c.path for c in lock.calls] == ["/v1/pre-reboot", "/v1/steady-state"]
            assert lock.calls[1].client == {"id": me, "group": "e2e"}
            assert lock.holder == {}
            # Every refusal is in the status the boot printed.
            start = g.pos
            g.expect("distbuild-update: up to date (2.0.0)", ROUND)
            status = g.transcript[start : g.pos]
            for reason in (
                "version went back",
                "expired metadata",
                TAMPERED,
                "'s390x'",
                "more than",
            ):
                assert reason in status, reason
            s.timings["bad containerd rolled back"] = bad_containerd_rolls_back(s, g)
            assert lock.holder == {}, "the lock was released once 2.0.0 was blessed again"

            # 4. A bad release, served slowly; the power goes mid-write of slot A.
            lock.holder["e2e"] = "another-node"
            assert srv.fault is not None
            srv.fault.rate = SLOW_RATE
            v3_path = s.root_path("3.0.0")
            published_3 = int(time.time())
            s.publish(s.release(s.v2, "3.0.0", broken_init=True))
            length = chan.target_file(v3_path).stat().st_size
            g.expect("writing node 3.0.0 into slot a", ROUND)
            fault = srv.fault
            assert fault is not None
            fault.streamed = 0
            g.watch(lambda: fault.streamed > length * 0.4, INSTALL, "40 % of 3.0.0")
            s.timings["power cut"] = g.elapsed()
            g.power_cut()
        cut_at = srv.sent(r"3\.0\.0/.*root\.img$")
        assert cut_at < length
        # The slot that runs was never touched: B holds exactly the signed 2.0.0 image.
        assert partition_sha256(disk, "root-b", len(genuine)) == hashlib.sha256(genuine).hexdigest()
        srv.fault.rate = None

        with s.guest(disk, ns, "run2", extra=rtc_behind_epoch(s.arch)) as g:
            g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={s.arch}", BOOT)
            clock = g.expect("distbuild-os: clock=", BOOT)
            g.expect("distbuild-os: slot b marked good", BOOT)
            resumed = g.expect("resuming node/3.0.0", ROUND)
            assert clock < resumed
            clock_at_verified_floor(g.transcript, published_3)
            s.timings["run 2: 3.0.0 resumed and written"] = g.expect(
                "waiting for the FleetLock reboot lock", INSTALL
            )
            g.expect("waiting for the FleetLock reboot lock", ROUND)  # asked again: still held
            assert "booted slot=a" not in g.transcript
            fetched = srv.sent(r"3\.0\.0/.*root\.img$")
            assert fetched <= 1.05 * length, (fetched, length, cut_at)

            del lock.holder["e2e"]  # the other node is done
            tries = s.recipe.boot_tries
            for _ in range(tries):
                g.expect("distbuild-initramfs: slot=a version=3.0.0", INSTALL + FAILED_TRY)
            g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={s.arch}", FAILED_TRY + BOOT)
            s.timings["run 2: fell back, 2.0.0 good"] = g.expect(
                "distbuild-os: slot b marked good", BOOT
            )
            g.expect("rolled back: 3.0.0", ROUND)
            g.expect("3.0.0 failed here before; not trying it again", ROUND)
            assert lock.holder == {}, "the lock was released after the fallback was blessed"
            # One more round: still not fetched again.
            sent = srv.sent(r"3\.0\.0/.*root\.img$")
            g.expect("3.0.0 failed here before; not trying it again", ROUND)
            assert srv.sent(r"3\.0\.0/.*root\.img$") == sent
            assert "booted slot=a version=3.0.0" not in g.transcript
        run2 = g.transcript
    # What the boot loader was left with: A failed its tries and is out, B is good.
    assert run2.count("distbuild-initramfs: slot=a version=3.0.0") == tries  # each try counted
    bc = disk_bootctl(disk, s.recipe)
    states = bc.states()
    assert not states["a"].bootable and not states["a"].good and states["a"].tries_left == 0
    assert states["b"].good and states["b"].version == "2.0.0"
    assert bc.boot_order() == ["b"]


def bad_containerd_rolls_back(s: Story, g: Guest) -> float:
    """2.5.0 (containerd cannot start) is installed into A and booted; its health
    check fails naming containerd; the node rolls back to 2.0.0 in B by itself,
    within the same power-on, and ``status`` says why."""
    s.publish(s.release(s.bad, "2.5.0"))
    g.expect("writing node 2.5.0 into slot a", ROUND)
    g.expect(f"distbuild-os: booted slot=a version=2.5.0 arch={s.arch}", INSTALL + BOOT)
    start = g.pos
    failed = whole_line(g, "distbuild-os: health check failed: containerd does not answer")
    assert "failed to load TOML" in failed, failed  # containerd's own reason, from its log
    g.expect(f"distbuild-os: booted slot=b version=2.0.0 arch={s.arch}", REBOOT)
    assert "slot a marked good" not in g.transcript[start:]
    g.expect("distbuild-os: slot b marked good", BOOT)
    # The status the boot printed, from the state the rollback wrote.
    line = whole_line(g, "rolled back: 2.5.0 (slot a, ", ROUND)
    assert "rolled back to 2.0.0 in slot b: health check failed on slot a (2.5.0): " in line
    assert "containerd does not answer ctr version" in line
    return g.expect("2.5.0 failed here before; not trying it again", ROUND)


def whole_line(g: Guest, text: str, timeout: float = HEALTH_WAIT + BOOT) -> str:
    """The console line holding ``text``, once all of it has arrived."""
    g.expect(text, timeout)
    begin = g.transcript.rfind("\n", 0, g.pos) + 1
    g.expect("\n", 10)
    return g.transcript[begin : g.pos]


_CLOCK = re.compile(r"distbuild-os: clock=(\d+) floor=(\d+)")
_MOVED = re.compile(r"distbuild-os: clock was (\d+), behind the floor; set to (\d+)")


def clock_at_verified_floor(transcript: str, published: int) -> None:
    """The RTC started before the image's epoch; rcS moved the clock to the
    newest release time the node verified (3.0.0's), which is after the epoch."""
    (moved_from, moved_to) = (int(v) for v in _MOVED.findall(transcript)[0])
    now, floor = (int(v) for v in _CLOCK.findall(transcript)[0])
    assert moved_from < EPOCH <= floor, (moved_from, EPOCH, floor)
    assert published - 1 <= floor <= time.time(), (published, floor)
    assert now >= moved_to >= floor, (now, moved_to, floor)
