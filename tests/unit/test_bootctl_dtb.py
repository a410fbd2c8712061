"""A slot's device tree: installed with its kernel, replaced, and removed when a release has none.

Both backends, on a real FAT image edited with mtools (ImageFiles), as the disk
build and ``distbuild disk`` edit boot partitions.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distbuild.core.bootctl.base import BootControl, DirFiles, ImageFiles, SlotBoot, open_bootctl
from distbuild.core.bootctl.systemd_boot import SystemdBoot, dtb_path
from distbuild.core.bootctl.uboot import UBootControl
from distbuild.core.bootctl.uboot import dtb_path as uboot_dtb_path

DTB_1 = b"\xd0\x0d\xfe\xed" + b"orangepi-pc 1.0" * 64
DTB_2 = b"\xd0\x0d\xfe\xed" + b"orangepi-pc 2.0" * 80


def _boot(version: str, dtb: bytes | None) -> SlotBoot:
    return SlotBoot(
        version, b"kernel " + version.encode(), b"initrd " + version.encode(), "quiet", dtb=dtb
    )


@pytest.fixture
def fat(tmp_path: Path) -> ImageFiles:
    if not shutil.which("mkfs.vfat") or not shutil.which("mcopy"):
        pytest.skip("needs dosfstools and mtools")
    img = tmp_path / "boot.img"  # 40 MiB: a FAT32 boot partition, as mkfs makes one
    subprocess.run(["mkfs.vfat", "-C", "-F", "32", img, "40960"], check=True, capture_output=True)
    return ImageFiles(img)


def _installed(bc: BootControl, slot: str, boot: SlotBoot) -> None:
    bc.install(slot, boot)
    bc.set_next(slot, 3)
    bc.mark_good(slot)


def test_uboot_writes_replaces_and_removes_the_slot_dtb(fat: ImageFiles) -> None:
    bc = open_bootctl("u-boot", fat, cmdline="")
    assert isinstance(bc, UBootControl)
    _installed(bc, "a", _boot("1.0", DTB_1))
    assert uboot_dtb_path("a") == "a/board.dtb"
    assert fat.read("a/board.dtb") == DTB_1
    assert "board.dtb" in fat.list("a")

    bc.install("b", _boot("2.0", DTB_2))
    assert fat.read("b/board.dtb") == DTB_2
    assert fat.read("a/board.dtb") == DTB_1  # the running slot's DTB is untouched
    assert bc.entry("b")["distbuild_version"] == "2.0"

    # A later release of B carries a new DTB: replaced, not appended to.
    bc.install("b", _boot("2.1", DTB_1))
    assert fat.read("b/board.dtb") == DTB_1

    # A release without a DTB for this board: the stale one must not boot its kernel.
    bc.install("b", _boot("2.2", None))
    assert fat.read("b/board.dtb") is None
    assert fat.list("b") == ["bootargs.env", "initrd.img", "zImage"]
    assert fat.read("a/board.dtb") == DTB_1
    assert bc.states()["b"].version == "2.2"


def test_uboot_without_dtb_keeps_todays_files(fat: ImageFiles) -> None:
    bc = open_bootctl("u-boot", fat, cmdline="")
    _installed(bc, "a", _boot("1.0", None))
    assert fat.read("a/board.dtb") is None
    assert fat.list("a") == ["bootargs.env", "initrd.img", "zImage"]


def _entry(fat: ImageFiles, bc: SystemdBoot, slot: str) -> str:
    entry = bc.entries()[slot]
    text = fat.read(f"loader/entries/{entry.name}")
    assert text is not None
    return text.decode()


def test_efi_writes_the_dtb_beside_the_kernel_and_names_it_in_the_entry(fat: ImageFiles) -> None:
    bc = open_bootctl("systemd-boot", fat, cmdline="")
    assert isinstance(bc, SystemdBoot)
    _installed(bc, "a", _boot("1.0", DTB_1))
    assert dtb_path("a") == "distbuild/a/board.dtb"
    assert fat.read("distbuild/a/board.dtb") == DTB_1
    lines = _entry(fat, bc, "a").splitlines()
    assert "devicetree /distbuild/a/board.dtb" in lines
    assert lines.index("devicetree /distbuild/a/board.dtb") < len(lines) - 1  # options stay last

    bc.install("b", _boot("2.0", DTB_2))
    assert fat.read("distbuild/b/board.dtb") == DTB_2
    assert "devicetree /distbuild/b/board.dtb" in _entry(fat, bc, "b").splitlines()
    bc.install("b", _boot("2.1", DTB_1))
    assert fat.read("distbuild/b/board.dtb") == DTB_1

    bc.install("b", _boot("2.2", None))
    assert fat.read("distbuild/b/board.dtb") is None
    assert "devicetree" not in _entry(fat, bc, "b")
    assert fat.read("distbuild/a/board.dtb") == DTB_1
    assert "devicetree /distbuild/a/board.dtb" in _entry(fat, bc, "a").splitlines()


def test_slotboot_dtb_is_optional_and_last() -> None:
    """The disk build (b-boards) passes ``dtb=`` by name; old callers pass four fields."""
    boot = SlotBoot("1.0", b"k", b"i", "quiet")
    assert boot.dtb is None
    assert list(SlotBoot.__dataclass_fields__)[-1] == "dtb"


class _CutAtDtb(DirFiles):
    """A boot partition that loses power when the DTB is written (later writes fail too)."""

    cut = False

    def write(self, path: str, data: bytes) -> None:
        self.cut = self.cut or path.endswith("board.dtb")
        if self.cut:
            raise OSError("power cut")
        super().write(path, data)


@pytest.mark.parametrize("chain", ["u-boot", "systemd-boot"])
def test_a_power_cut_while_the_dtb_is_written_leaves_no_bootable_half_slot(
    tmp_path: Path, chain: str
) -> None:
    files = DirFiles(tmp_path)
    _installed(open_bootctl(chain, files, cmdline=""), "a", _boot("1.0", DTB_1))
    _installed(open_bootctl(chain, files, cmdline=""), "b", _boot("1.5", DTB_1))
    with pytest.raises(OSError):
        open_bootctl(chain, _CutAtDtb(tmp_path), cmdline="").install("b", _boot("2.0", DTB_2))
    after = open_bootctl(chain, files, cmdline="")
    assert not after.states()["b"].bootable
    # The new entry is written last: none names 2.0 while its DTB is missing.
    assert after.states()["b"].version != "2.0"
    assert after.boot_order() == ["a"] and after.states()["a"].good
