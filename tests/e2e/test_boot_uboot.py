"""armv7 through U-Boot under TCG: the A/B boot script with real U-Boot and a real kernel.

``test_script_*``: the recipe's Debian kernel with a one-file busybox
initramfs, so U-Boot's counting and fallback are checked with nothing else in
the way; boot state is read and changed offline with the project's own boot
control on the disk image, between boots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distbuild.bootctl.base import ImageFiles, SlotBoot, open_bootctl
from distbuild.bootctl.uboot import ENV_BACKUP, ENV_FILE, UBootControl
from distbuild.model.recipe import Recipe
from tests.e2e.uboot_support import (
    MiniSlot,
    blank_uboot_disk,
    fetch_mini_slot,
    mini_initrd,
    start_qemu,
)

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.network]

BOOT_TIMEOUT = 60  # one boot: U-Boot ~3 s, kernel to init ~8 s under TCG


@dataclass
class MiniDisk:
    recipe: Recipe
    path: Path
    ctl: UBootControl
    workdir: Path


@pytest.fixture(scope="module")
def mini(
    project: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Recipe, MiniSlot]:
    return fetch_mini_slot(project, cache_dir, tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="module")
def mini_disk(
    mini: tuple[Recipe, MiniSlot], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MiniDisk]:
    """One disk shared by the script tests, which run in order: fresh A, failing B, power cut."""
    recipe = mini[0]
    workdir = tmp_path_factory.mktemp("uboot-mini")
    path = workdir / "disk.img"
    files = blank_uboot_disk(recipe, path)
    ctl = open_bootctl("u-boot", files, cmdline="")
    assert isinstance(ctl, UBootControl)
    yield MiniDisk(recipe, path, ctl, workdir)


def _slot_boot(slot: MiniSlot, version: str, *, fail: bool = False) -> SlotBoot:
    return SlotBoot(
        version=version,
        kernel=slot.kernel,
        initrd=mini_initrd(slot.busybox, fail=fail),
        cmdline=f"console=ttyAMA0 distbuild.version={version} panic=1",
    )


def test_script_boots_a_fresh_slot_a_and_counts_the_try(
    mini: tuple[Recipe, MiniSlot], mini_disk: MiniDisk
) -> None:
    ctl = mini_disk.ctl
    ctl.install("a", _slot_boot(mini[1], "1.0"))
    ctl.set_next("a", mini_disk.recipe.boot_tries)
    console = start_qemu(mini_disk.recipe, mini_disk.path, mini_disk.workdir)
    try:
        seen = console.wait_for("booted slot=", timeout=BOOT_TIMEOUT)
        assert seen, f"no boot; console in {console.log}"
        assert console.matching("distbuild-os: booted slot=")[-1].endswith(
            "booted slot=a version=1.0 arch=armv7"
        )
        assert console.wait_for("reboot: Power down", timeout=30)
    finally:
        console.stop()
    # The script spent one try before booting, and wrote both copies.
    assert ctl.counters()["BOOT_A_LEFT"] == str(mini_disk.recipe.boot_tries - 1)
    assert ctl.files.read(ENV_FILE) == ctl.files.read(ENV_BACKUP)
    ctl.mark_good("a")  # what the node's health check does
    assert ctl.states()["a"].good


def test_script_falls_back_to_a_after_b_used_its_tries(
    mini: tuple[Recipe, MiniSlot], mini_disk: MiniDisk
) -> None:
    ctl = mini_disk.ctl
    tries = mini_disk.recipe.boot_tries
    ctl.install("b", _slot_boot(mini[1], "2.0", fail=True))
    ctl.set_next("b", tries)
    assert ctl.boot_order() == ["b", "a"]
    console = start_qemu(mini_disk.recipe, mini_disk.path, mini_disk.workdir)
    try:
        # B's init dies, the kernel panics and resets; U-Boot counts each try.
        # No user space helps: the guest only powers off once A is up.
        assert console.wait_for("booted slot=a", timeout=BOOT_TIMEOUT * (tries + 1)), (
            f"A never came back; console in {console.log}"
        )
        assert console.wait_for("reboot: Power down", timeout=30)
    finally:
        console.stop()
    booted = console.matching("distbuild-os: booted slot=")
    assert [line.split("slot=")[1][0] for line in booted] == ["b"] * tries + ["a"]
    assert len(console.matching("Kernel panic")) == tries
    b, a = ctl.states()["b"], ctl.states()["a"]
    assert (b.bootable, b.tries_left, b.good, b.version) == (False, 0, False, "2.0")
    assert a.good and a.bootable and a.version == "1.0"
    assert ctl.boot_order() == ["a"]


def test_script_survives_a_power_cut_in_the_env_write(mini_disk: MiniDisk) -> None:
    ctl = mini_disk.ctl
    files = ctl.files
    assert isinstance(files, ImageFiles)
    before = ctl.counters()
    primary = files.read(ENV_FILE)
    assert primary is not None
    files.write(ENV_FILE, primary[:1000])  # the write stopped a quarter of the way
    console = start_qemu(mini_disk.recipe, mini_disk.path, mini_disk.workdir)
    try:
        assert console.wait_for("booted slot=", timeout=BOOT_TIMEOUT), f"console in {console.log}"
        assert console.wait_for("reboot: Power down", timeout=30)
    finally:
        console.stop()
    assert console.matching("boot state from distbuild.env.bak (primary copy damaged)")
    assert console.matching("distbuild-os: booted slot=")[-1].endswith(
        "slot=a version=1.0 arch=armv7"
    )
    # The script rewrote both copies whole, with A's try counted.
    assert ctl.read_env()[1] == ENV_FILE
    assert ctl.counters()["BOOT_A_LEFT"] == str(int(before["BOOT_A_LEFT"]) - 1)
