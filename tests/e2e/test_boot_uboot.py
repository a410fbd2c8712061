"""armv7 through U-Boot under TCG (issue 3's acceptance for armv7).

``test_node_*``: the node image's own disk (build record kind ``disk``), one
copy carried through the tests in order: first boot on A, a B whose init
fails, a B with one flipped byte, a good update into B, a torn env write.
Slots are written and flipped offline with the project's own boot control on
the disk image (``ImageFiles``), as ``distbuild disk`` does.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.bootctl.base import ImageFiles, SlotBoot, open_bootctl
from distbuild.core.bootctl.uboot import ENV_BACKUP, ENV_FILE, UBootControl
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_offsets, partition_sha256
from distbuild.model.recipe import Recipe, load_recipe
from tests.conftest import EPOCH, read_record
from tests.e2e.conftest import NodeBuilds
from tests.support.node_console import (
    RTC_1970,
    assert_services_up,
    clock_after_floor,
    clock_was_moved,
    host_key,
)
from tests.support.qemu_guest import Console, start_qemu

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow, pytest.mark.network]
# Built in the background before the module runs (tests/e2e/conftest.py).
NODE_BUILDS = [("armv7", "1.0.0"), ("armv7", "2.0.0")]

BOOT_TIMEOUT = 60  # one boot: ~18 s from qemu start to "marked good" under TCG


# --- the node image ----------------------------------------------------------------------


@dataclass
class Node:
    """One copy of the v1 disk, carried through the node tests in order."""

    recipe: Recipe
    disk: Path
    workdir: Path
    v1: Path  # build directories (with build.json)
    v2: Path
    boots: list[float]
    host_key: str | None = None  # made on the first boot, kept on data after

    @property
    def parts(self) -> dict[str, tuple[int, int]]:
        return partition_offsets(self.disk)

    def bootctl(self) -> UBootControl:
        ctl = open_bootctl("u-boot", ImageFiles(self.disk, self.parts["boot"][0]), "")
        assert isinstance(ctl, UBootControl)
        return ctl

    def write_root(self, slot: str, build: Path, *, flip_at: int | None = None) -> None:
        """The root image into ``root-<slot>`` (install() made the slot unbootable first)."""
        root = artifact(build, "root")
        offset, size = self.parts[f"root-{slot}"]
        assert root.stat().st_size <= size
        with root.open("rb") as src, self.disk.open("r+b") as dst:
            dst.seek(offset)
            shutil.copyfileobj(src, dst)
            if flip_at is not None:
                dst.seek(offset + flip_at)
                byte = dst.read(1)
                dst.seek(offset + flip_at)
                dst.write(bytes([byte[0] ^ 0xFF]))

    def boot(self, *expect: str, timeout: float, extra: tuple[str, ...] = ()) -> Console:
        """Boot until each of ``expect`` was seen in order (or a step times out)."""
        console = start_qemu(self.recipe, self.disk, self.workdir, extra)
        started = time.monotonic()
        try:
            for text in expect:
                left = timeout - (time.monotonic() - started)
                assert console.wait_for(text, timeout=left) == text, (
                    f"{text!r} not seen; console in {console.log}"
                )
        finally:
            console.stop()
        self.boots.append(time.monotonic() - started)
        return console


def artifact(build: Path, kind: str, arch: str = "armv7") -> Path:
    record = read_record(build)
    (path,) = [a["path"] for a in record["artifacts"] if a["kind"] == kind and a["arch"] == arch]
    return build / path


def slot_boot(build: Path) -> SlotBoot:
    meta = json.loads(artifact(build, "boot").read_text())
    return SlotBoot(
        version=meta["version"],
        kernel=artifact(build, "kernel").read_bytes(),
        initrd=artifact(build, "initrd").read_bytes(),
        cmdline=meta["cmdline"],
    )


@pytest.fixture(scope="module")
def node(
    project: Path, build_node: NodeBuilds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    v1, v2 = build_node.many(("armv7", "1.0.0"), ("armv7", "2.0.0"))
    workdir = tmp_path_factory.mktemp("uboot-node")
    disk = workdir / "disk.img"
    run(["cp", "--sparse=always", artifact(v1, "disk"), disk])
    recipe = load_recipe(project, get_arch("armv7"))
    n = Node(recipe, disk, workdir, v1, v2, [])
    yield n
    print(f"armv7 U-Boot node boots (s, qemu start to last expected line): {n.boots}")


def test_node_disk_boots_slot_a_and_marks_it_good(node: Node) -> None:
    """The first boot, with the RTC at 1970 (a board without an RTC battery):
    the clock is moved to the image's epoch, and the services come up."""
    ctl = node.bootctl()
    assert ctl.boot_order() == ["a"]
    console = node.boot(
        "distbuild-os: booted slot=a version=1.0.0 arch=armv7",
        "distbuild-os: services up",
        "distbuild-os: slot a marked good",
        timeout=BOOT_TIMEOUT * 2,
        extra=RTC_1970,
    )
    transcript = "\n".join(console.lines)
    assert_services_up(transcript, "a")
    clock_was_moved(transcript, EPOCH)
    clock_after_floor(transcript, EPOCH)
    node.host_key = host_key(transcript)
    assert not console.matching("booted slot=b")
    a = ctl.states()["a"]
    assert (a.good, a.bootable, a.version) == (True, True, "1.0.0")
    # The script counted the try, the health check gave the full count back.
    assert ctl.counters()["BOOT_A_LEFT"] == str(node.recipe.boot_tries)


def test_node_b_with_a_flipped_byte_fails_verity_and_a_boots(node: Node) -> None:
    tries = node.recipe.boot_tries
    ctl = node.bootctl()
    ctl.install("b", slot_boot(node.v2))
    # One byte in the first data block: every mount of the file system reads it.
    node.write_root("b", node.v2, flip_at=2048)
    ctl.set_next("b", tries)

    console = node.boot(
        "distbuild-os: booted slot=a version=1.0.0 arch=armv7",
        "distbuild-os: slot a marked good",
        timeout=BOOT_TIMEOUT * (tries + 2),
    )
    assert not console.matching("booted slot=b")
    assert len(console.matching("distbuild: booting slot b")) == tries
    assert console.matching("device-mapper: verity"), "no dm-verity error on the console"
    b = ctl.states()["b"]
    assert (b.bootable, b.good) == (False, False)
    assert ctl.boot_order() == ["a"]


def test_node_update_into_b_boots_b_and_leaves_a_untouched(node: Node) -> None:
    ctl = node.bootctl()
    root_a = partition_sha256(node.disk, "root-a")
    ctl.install("b", slot_boot(node.v2))
    node.write_root("b", node.v2)
    ctl.set_next("b", node.recipe.boot_tries)

    console = node.boot(
        "distbuild-os: booted slot=b version=2.0.0 arch=armv7",
        "distbuild-os: services up",
        "distbuild-os: slot b marked good",
        timeout=BOOT_TIMEOUT * 2,
    )
    assert_services_up("\n".join(console.lines), "b")
    # The same node after an update: the host key made on its first boot stays.
    assert not console.matching("ssh host key made")
    b, a = ctl.states()["b"], ctl.states()["a"]
    assert (b.good, b.bootable, b.version) == (True, True, "2.0.0")
    assert (a.good, a.version) == (True, "1.0.0")
    assert ctl.boot_order() == ["b", "a"]
    assert partition_sha256(node.disk, "root-a") == root_a


def test_node_torn_env_write_still_boots_a_good_slot(node: Node) -> None:
    ctl = node.bootctl()
    primary = ctl.files.read(ENV_FILE)
    assert primary is not None
    ctl.files.write(ENV_FILE, primary[: len(primary) // 3])  # power cut a third of the way
    console = node.boot(
        "distbuild-os: booted slot=b version=2.0.0 arch=armv7",
        "distbuild-os: slot b marked good",
        timeout=BOOT_TIMEOUT * 2,
    )
    assert console.matching("boot state from distbuild.env.bak (primary copy damaged)")
    assert ctl.read_env()[1] == ENV_FILE  # rewritten whole
    assert ctl.files.read(ENV_FILE) == ctl.files.read(ENV_BACKUP)
