"""Board disks without booting: the loader at its offset byte for byte against the
package's own file, the partition table valid, the DTB and firmware files on the
boot partition, for every board that is not booted in qemu (and orangepi-pc-qemu,
which b-opi's e2e boots). One build per arch makes every board's disk."""

from __future__ import annotations

import gzip
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from distbuild.disk.boards import mbr_entries
from distbuild.disk.diskimg import partition_offsets
from distbuild.record import load_record
from distbuild.rootfs.lock import read_lock
from tests.conftest import image_args, run_cli
from tests.support.disk import TINY, project_copy

pytestmark = [pytest.mark.slow, pytest.mark.network]

BOARDS = {
    "armv7": ("orangepi-pc-qemu", "bananapi", "nanopi-neo", "orangepi-zero"),
    "arm64": ("rpi3", "rpi4", "pine64"),
}


@dataclass(frozen=True)
class Built:
    project: Path
    base: Path  # the build directory (build.json)
    boot_tree: Path  # the boot lock's packages, unpacked the way the build did


def _build(arch: str, tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Built:
    """One build of a small image for ``arch`` that makes every listed board's disk."""
    tmp = tmp_path_factory.mktemp(f"boards-{arch}")
    project = project_copy(tmp)
    (project / "images/tiny.yaml").write_text(TINY)
    out = tmp / "out"
    boards = [a for b in BOARDS[arch] for a in ("--board", b)]
    assert run_cli(*image_args(project, out, "tiny", arch, extra=boards)) == 0
    base = out / "tiny" / "1.0.0"
    return Built(project, base, _boot_tree(base, arch, cache, tmp / "debs"))


@pytest.fixture(scope="module")
def armv7(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Built:
    return _build("armv7", tmp_path_factory, cache_dir)


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Built:
    return _build("arm64", tmp_path_factory, cache_dir)


def _boot_tree(base: Path, arch: str, cache: Path, into: Path) -> Path:
    """The board packages of the build's boot lock, unpacked here with dpkg-deb
    from the cached .deb files: the reference the disks are compared with."""
    lock = read_lock(base / arch / "boot.lock.json")
    for p in lock.packages:
        if p.name.startswith(("u-boot-", "raspi-firmware")):
            deb = cache / "debs" / f"{p.sha256}.deb"
            subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def _disk(built: Built, arch: str, board: str) -> Path:
    record, directory = load_record(built.base / "build.json")
    (art,) = record.find("disk", arch, board=board)
    (bmap,) = record.find("disk-bmap", arch, board=board)
    assert (directory / bmap.path).is_file()
    return directory / art.path


def _fat(disk: Path, path: str) -> bytes | None:
    offset = partition_offsets(disk)["boot" if "boot" in partition_offsets(disk) else "esp"][0]
    proc = subprocess.run(
        ["mcopy", "-n", "-i", f"{disk}@@{offset}", f"::/{path}", "-"],
        capture_output=True,
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    return proc.stdout if proc.returncode == 0 else None


def _verify_table(disk: Path) -> None:
    v = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert v.returncode == 0 and "No problems found" in v.stdout
    s = subprocess.run(["sfdisk", "--verify", str(disk)], capture_output=True, text=True)
    assert s.returncode == 0 and "No errors detected" in s.stdout


def _loader_at(disk: Path, offset: int, package_file: Path) -> None:
    want = package_file.read_bytes()
    with disk.open("rb") as f:
        f.seek(offset)
        assert f.read(len(want)) == want, f"{package_file.name} is not at {offset} in {disk}"


def _dtb(built: Built, arch: str, board: str) -> bytes:
    record, directory = load_record(built.base / "build.json")
    (art,) = record.find("dtb", arch, board=board)
    return (directory / art.path).read_bytes()


SUNXI32 = {
    "orangepi-pc-qemu": "nanopi_neo",
    "bananapi": "Bananapi",
    "nanopi-neo": "nanopi_neo",
    "orangepi-zero": "orangepi_zero",
}


def test_allwinner_armv7_cards(armv7: Built) -> None:
    arch, b = "armv7", armv7
    for board, uboot in SUNXI32.items():
        disk = _disk(b, arch, board)
        spl = b.boot_tree / f"usr/lib/u-boot/{uboot}/u-boot-sunxi-with-spl.bin"
        _loader_at(disk, 8192, spl)
        _verify_table(disk)
        parts = partition_offsets(disk)
        assert min(start for start, _ in parts.values()) == 1 << 20
        with disk.open("rb") as f:
            f.seek(512 + 80)
            assert int.from_bytes(f.read(4), "little") == 8  # an 8-entry GPT, clear of the SPL
        assert _fat(disk, "a/board.dtb") == _dtb(b, arch, board)
        env = _fat(disk, "board.env")
        assert env is not None and b"distbuild_console=ttyS0,115200" in env
        assert f"distbuild_board={board}".encode() in env
        assert _fat(disk, "boot.scr") is not None
    # The Banana Pi's loader is the A20 build: it differs from the H3 boards'.
    a20 = (b.boot_tree / "usr/lib/u-boot/Bananapi/u-boot-sunxi-with-spl.bin").read_bytes()
    h3 = (b.boot_tree / "usr/lib/u-boot/nanopi_neo/u-boot-sunxi-with-spl.bin").read_bytes()
    assert a20 != h3
    cfg = gzip.decompress(
        (b.boot_tree / "usr/share/doc/u-boot-sunxi/configs/config.Bananapi.gz").read_bytes()
    )
    assert b"CONFIG_ENV_IS_IN_FAT=y" in cfg  # the env check's premise
    # One root payload, a DTB per board, and the qemu board not built when not asked.
    record, _ = load_record(b.base / "build.json")
    assert len(record.find("root", arch)) == 1
    assert {a.board for a in record.find("dtb", arch)} == set(SUNXI32)
    assert not record.find("disk", arch, board="qemu")


def test_arm64_cards_pine64_and_raspberry_pi(arm64: Built) -> None:
    arch, b = "arm64", arm64
    pine = _disk(b, arch, "pine64")
    tree = b.boot_tree / "usr/lib/u-boot/pine64_plus"
    _loader_at(pine, 8192, tree / "sunxi-spl.bin")
    _loader_at(pine, 40960, tree / "u-boot-sunxi-with-spl.fit.itb")
    _verify_table(pine)
    assert _fat(pine, "a/board.dtb") == _dtb(b, arch, "pine64")
    assert _fat(pine, "EFI/BOOT/BOOTAA64.EFI") is not None
    for board, uboot, firmware in (
        ("rpi3", "rpi_3", ("bootcode.bin", "start.elf", "fixup.dat")),
        ("rpi4", "rpi_4", ("start4.elf", "fixup4.dat")),
    ):
        disk = _disk(b, arch, board)
        _verify_table(disk)
        for name in firmware:
            assert _fat(disk, name) == (b.boot_tree / "usr/lib/raspi-firmware" / name).read_bytes()
        assert (
            _fat(disk, "u-boot.bin")
            == (b.boot_tree / f"usr/lib/u-boot/{uboot}/u-boot.bin").read_bytes()
        )
        config = _fat(disk, "config.txt")
        assert config is not None and b"kernel=u-boot.bin" in config and b"arm_64bit=1" in config
        assert _fat(disk, "a/board.dtb") == _dtb(b, arch, board)
        assert _fat(disk, "EFI/BOOT/BOOTAA64.EFI") is not None
    # The Pi 3's boot ROM reads only an MBR: the boot partition is there as FAT32.
    start, size = partition_offsets(_disk(b, arch, "rpi3"))["esp"]
    assert (0x0C, start // 512, size // 512) in mbr_entries(_disk(b, arch, "rpi3"))


def test_the_build_time_checks_catch_a_damaged_card(armv7: Built, tmp_path: Path) -> None:
    """The checks the build runs on every disk fail on a flipped loader byte, a damaged
    table, or a missing DTB (so a card that would not boot is never listed)."""
    from distbuild.core.arch import get_arch
    from distbuild.core.bootctl.base import ImageFiles
    from distbuild.disk.boards import BoardError, plan_loader
    from distbuild.disk.layout import check_board_disk, check_loader, check_table, slot_dtb
    from distbuild.model.recipe import load_recipe

    board = load_recipe(armv7.project, get_arch("armv7")).board("bananapi")
    loaders = plan_loader(board, armv7.boot_tree)
    dtb = tmp_path / "board.dtb"
    dtb.write_bytes(_dtb(armv7, "armv7", "bananapi"))

    def copy() -> Path:
        disk = tmp_path / "disk.img"
        subprocess.run(
            ["cp", "--sparse=always", str(_disk(armv7, "armv7", "bananapi")), str(disk)], check=True
        )
        return disk

    disk = copy()
    check_board_disk(board, disk, loaders, ("boot", 1), slot_dtb(dtb), armv7.boot_tree)
    with disk.open("r+b") as f:
        f.seek(8192 + 1000)
        byte = f.read(1)
        f.seek(8192 + 1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BoardError, match="are not u"):
        check_loader(disk, loaders)

    disk = copy()
    _overlap_root_a_with_boot(disk)
    with pytest.raises(BoardError, match="finds problems"):
        check_table(disk)

    disk = copy()
    ImageFiles(disk, partition_offsets(disk)["boot"][0]).remove("a/board.dtb")
    with pytest.raises(BoardError, match=r"a/board\.dtb missing"):
        check_board_disk(board, disk, loaders, ("boot", 1), slot_dtb(dtb), armv7.boot_tree)


def _overlap_root_a_with_boot(disk: Path) -> None:
    """Move root-a's first sector into the boot partition in the primary GPT, CRCs redone:
    a table both verifiers must refuse."""
    import struct
    import zlib

    with disk.open("r+b") as f:
        f.seek(512)
        header = bytearray(f.read(92))
        lba, count, size = struct.unpack_from("<QII", header, 72)
        f.seek(lba * 512)
        table = bytearray(f.read(count * size))
        boot_first = struct.unpack_from("<Q", table, 32)[0]
        struct.pack_into("<Q", table, size + 32, boot_first + 8)
        struct.pack_into("<I", header, 88, zlib.crc32(table))
        struct.pack_into("<I", header, 16, 0)
        struct.pack_into("<I", header, 16, zlib.crc32(header))
        f.seek(lba * 512)
        f.write(table)
        f.seek(512)
        f.write(header)
