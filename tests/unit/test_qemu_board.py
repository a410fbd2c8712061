"""qemu's arguments for an emulated board: the SoC machine, its card slot, a power-of-two card."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.errors import DistbuildError
from distbuild.model.recipe import load_recipe
from distbuild.qemu import card_size, qemu_argv
from tests.conftest import REPO

MIB = 1 << 20


def test_card_size_is_the_next_power_of_two() -> None:
    assert card_size(450 * MIB) == 512 * MIB
    assert card_size(512 * MIB) == 512 * MIB
    assert card_size(512 * MIB + 1) == 1024 * MIB


def _argv(tmp_path: Path, size: int, write: bool) -> tuple[Path, list[str]]:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x5a" * 4096)
    with disk.open("r+b") as f:
        f.truncate(size)
    recipe = load_recipe(REPO, get_arch("armv7"))
    return disk, qemu_argv(recipe, disk, tmp_path, write, "user", board="orangepi-pc-qemu")


def test_board_boots_from_its_card_through_a_power_of_two_overlay(tmp_path: Path) -> None:
    disk, argv = _argv(tmp_path, 450 * MIB, write=False)
    joined = " ".join(argv)
    assert "-M orangepi-pc " in joined and "-m 1024 " in joined and "-smp 4 " in joined
    assert "-bios" not in argv  # the boot ROM loads the SPL from the card
    assert "-global cortex-a7-arm-cpu.cntfrq=24000000" in joined  # the H3's 24 MHz timer
    assert "-snapshot" not in argv  # the overlay is the throwaway: writes survive a power cycle
    assert "virtio" not in joined and "-nic user " in joined  # the SoC's EMAC takes it
    overlay = tmp_path / "card.qcow2"
    assert f"if=sd,format=qcow2,file={overlay}" in argv
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, check=True
    )
    meta = json.loads(info.stdout)
    assert meta["virtual-size"] == 512 * MIB
    assert meta["backing-filename"] == str(disk)
    assert disk.stat().st_size == 450 * MIB  # the image itself is only read


def test_board_with_write_grows_the_image_to_the_card_size(tmp_path: Path) -> None:
    disk, argv = _argv(tmp_path, 450 * MIB, write=True)
    assert f"if=sd,format=raw,file={disk}" in argv
    assert disk.stat().st_size == 512 * MIB
    assert disk.read_bytes()[:4096] == b"\x5a" * 4096
    assert disk.stat().st_blocks * 512 < MIB  # grown sparse


def test_a_board_qemu_does_not_emulate_is_an_error(tmp_path: Path) -> None:
    recipe = load_recipe(REPO, get_arch("armv7"))
    with pytest.raises(DistbuildError) as err:
        qemu_argv(recipe, tmp_path / "d.img", tmp_path, False, board="bananapi")
    assert "orangepi-pc-qemu" in (err.value.hint or "")
