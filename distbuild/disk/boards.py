"""A board's part of a disk: its loader on the raw card, its files on the boot partition,
and the layout checks every board disk passes before it is listed in a build.

The loader files, firmware files and the U-Boot build's configuration come
from the board's packages, unpacked from the boot lock for the target arch
(:func:`distbuild.disk.trees.boot_tools`); the device tree from the kernel
package. Paths a board names are resolved inside those trees, never outside.
"""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distbuild.bootchain.uboot import BOARD_ENV
from distbuild.core.bootctl.uboot import pack_text_env
from distbuild.core.errors import DistbuildError
from distbuild.core.names import check_relative_path
from distbuild.model.board import Board

SECTOR = 512
GPT_ENTRY = 128


class BoardError(DistbuildError):
    """A board's definition cannot be met, or a board disk fails its layout checks."""


@dataclass(frozen=True)
class Loader:
    """One loader file of a board, read from its package, and where it goes on the card."""

    name: str  # the file's path in the package
    offset: int
    data: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.data)


def package_file(board: Board, tools: Path, name: str) -> Path:
    """A file of the board's packages in the unpacked boot tree, confined to that tree."""
    path = check_relative_path(name, tools, what="board file", error=BoardError, where=board.where)
    if not path.is_file():
        raise BoardError(
            f"{board.where}: {name} is not in the board's packages ({', '.join(board.packages)})",
            hint="check the file list of the package for this arch (dpkg -c) and fix the path",
        )
    return path


def gpt_end(board: Board) -> int:
    """Where the primary GPT (protective MBR, header, entry array) ends, in bytes."""
    return (2 + board.gpt_entries * GPT_ENTRY // SECTOR) * SECTOR


def plan_loader(board: Board, tools: Path) -> list[Loader]:
    """The board's loader files, checked to fit between the GPT and the first partition.

    Run before a disk is written: a board whose constraints cannot be met
    is an error here, not a card that does not boot.
    """
    loaders = [
        Loader(f.file, f.offset, package_file(board, tools, f.file).read_bytes())
        for f in board.loader
    ]
    table = gpt_end(board)
    for ld in sorted(loaders, key=lambda ld: ld.offset):
        if ld.offset < table:
            fit = (ld.offset // SECTOR - 2) * SECTOR // GPT_ENTRY // 4 * 4
            raise BoardError(
                f"{board.where}: {ld.name} at byte {ld.offset} overlaps the GPT "
                f"({board.gpt_entries} entries end at byte {table})",
                hint=f"lower partitions.gpt_entries to {fit} or less"
                if fit >= 4
                else "move the loader past the GPT",
            )
        if ld.end > board.first_partition:
            raise BoardError(
                f"{board.where}: {ld.name} ({len(ld.data)} bytes at {ld.offset}) runs past the "
                f"first partition at {board.first_partition // 1024} KiB",
                hint=f"raise partitions.first_kib to at least {-(-ld.end // 1024)}",
            )
    ordered = sorted(loaders, key=lambda x: x.offset)
    for a, b in itertools.pairwise(ordered):
        if a.end > b.offset:
            raise BoardError(f"{board.where}: loader files {a.name} and {b.name} overlap")
    return loaders


def write_loader(disk: Path, loaders: list[Loader]) -> None:
    with disk.open("r+b") as f:
        for ld in loaders:
            f.seek(ld.offset)
            f.write(ld.data)


def kernel_dtb(board: Board, kernel_root: Path, release: str) -> Path | None:
    """The board's device tree from the unpacked kernel package, if it has one."""
    if board.device_tree is None:
        return None
    base = kernel_root / "usr/lib" / f"linux-image-{release}"
    path = check_relative_path(
        board.device_tree, base, what="device tree", error=BoardError, where=board.where
    )
    if not path.is_file():
        raise BoardError(
            f"{board.where}: device tree {board.device_tree} is not in the kernel package",
            hint=f"see the kernel's /usr/lib/linux-image-{release}/ for the DTB names",
        )
    return path


def board_env(board: Board) -> bytes:
    """``board.env``: what the boot script imports before it boots a slot."""
    values = {"distbuild_board": board.name}
    if board.console:
        values["distbuild_console"] = board.console
    if board.kernel_args:
        values["distbuild_board_args"] = " ".join(board.kernel_args)
    return pack_text_env(values)


# Boot partition paths a board's files may not take: the slots' files and the
# boot chain's state and loaders, which the A/B logic owns.
_OWNED_DIRS = ("a", "b", "distbuild", "efi", "loader")


def partition_files(
    board: Board, tools: Path, uboot: bool, chain_files: Iterable[str] = ()
) -> dict[str, bytes | Path]:
    """The board's files for a fresh boot partition (not the slot's DTB: see :data:`BOARD_DTB`).

    A board may not replace what the boot chain writes (``chain_files``, the
    slot directories): a definition cannot swap the A/B script or a slot's kernel.
    """
    files: dict[str, bytes | Path] = {}
    for f in board.boot_files:
        files[f.to] = package_file(board, tools, f.file)
    for name, text in board.boot_text:
        files[name] = text.encode()
    owned = {c.lower() for c in chain_files} | {BOARD_ENV}
    for name in files:
        if name.lower() in owned or name.split("/")[0].lower() in _OWNED_DIRS:
            raise BoardError(
                f"{board.where}: {name} on the boot partition belongs to the boot chain",
                hint="give the board's file another name (boot_files to:, boot_text)",
            )
    if uboot:
        files[BOARD_ENV] = board_env(board)
    return files


def uboot_config(board: Board, tools: Path) -> dict[str, str]:
    """The board's U-Boot build configuration (``CONFIG_X=value``), from its package."""
    if board.u_boot is None or board.u_boot.config is None:
        return {}
    raw = package_file(board, tools, board.u_boot.config).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    config = {}
    for line in raw.decode(errors="replace").splitlines():
        m = re.fullmatch(r"(CONFIG_[A-Za-z0-9_]+)=(.*)", line)
        if m:
            config[m.group(1)] = m.group(2).strip('"')
    return config


def check_env(board: Board, tools: Path, boot_number: int, partition_starts: list[int]) -> None:
    """The U-Boot build keeps its env where the board says, somewhere the disk leaves it room."""
    if board.u_boot is None:
        return
    cfg = uboot_config(board, tools)
    where = board.where
    want = {"fat": "CONFIG_ENV_IS_IN_FAT", "mmc": "CONFIG_ENV_IS_IN_MMC"}.get(board.u_boot.env)
    if want is not None and cfg.get(want) != "y":
        raise BoardError(
            f"{where}: U-Boot's build ({board.u_boot.config}) does not keep its env in "
            f"{board.u_boot.env} ({want} is not set)",
            hint="set u_boot.env to where this build keeps it (see its CONFIG_ENV_IS_IN_*)",
        )
    if board.u_boot.env == "fat":
        _check_fat_env(board, cfg, boot_number)
    elif board.u_boot.env == "mmc":
        offset = int(cfg.get("CONFIG_ENV_OFFSET", "0"), 0)
        end = offset + int(cfg.get("CONFIG_ENV_SIZE", "0"), 0)
        if end > min(partition_starts) or offset < gpt_end(board):
            raise BoardError(
                f"{where}: U-Boot's env ({offset:#x}..{end:#x}) collides with the partition table "
                "or a partition",
                hint="raise partitions.first_kib or lower partitions.gpt_entries",
            )


def _check_fat_env(board: Board, cfg: dict[str, str], boot_number: int) -> None:
    assert board.u_boot is not None
    name = cfg.get("CONFIG_ENV_FAT_FILE")
    if name != board.u_boot.env_file:
        raise BoardError(
            f"{board.where}: U-Boot's env file is {name!r}, not {board.u_boot.env_file!r}",
            hint=f"set u_boot.env_file: {name}",
        )
    part = cfg.get("CONFIG_ENV_FAT_DEVICE_AND_PART", ":auto").rpartition(":")[2]
    # "auto": the first bootable partition, which the boot partition is.
    if part not in ("auto", str(boot_number)):
        raise BoardError(
            f"{board.where}: U-Boot keeps its env on partition {part}, but the boot "
            f"partition is number {boot_number}",
            hint="use a U-Boot build whose CONFIG_ENV_FAT_DEVICE_AND_PART names the boot partition",
        )


MBR_FAT32_LBA = 0x0C
_MBR_TABLE = 446


def mbr_entries(disk: Path) -> list[tuple[int, int, int]]:
    """The MBR's partition entries: (type, first LBA, sectors), empty ones left out."""
    with disk.open("rb") as f:
        mbr = f.read(SECTOR)
    found = []
    for i in range(4):
        e = mbr[_MBR_TABLE + 16 * i : _MBR_TABLE + 16 * (i + 1)]
        if e[4]:
            found.append(
                (e[4], int.from_bytes(e[8:12], "little"), int.from_bytes(e[12:16], "little"))
            )
    return found


def mark_mbr_fat(disk: Path, first_lba: int) -> None:
    """Give the hybrid MBR's entry of the boot partition the FAT32 (LBA) type firmware looks for.

    sgdisk's ``--hybrid`` copies the GPT type (EFI, 0xEF); the Raspberry Pi's
    boot ROM and firmware look for a FAT partition type.
    """
    with disk.open("r+b") as f:
        mbr = bytearray(f.read(SECTOR))
        for i in range(4):
            at = _MBR_TABLE + 16 * i
            if mbr[at + 4] and int.from_bytes(mbr[at + 8 : at + 12], "little") == first_lba:
                mbr[at + 4] = MBR_FAT32_LBA
                f.seek(0)
                f.write(mbr)
                return
    raise BoardError(f"{disk.name}: no MBR entry at LBA {first_lba} after sgdisk --hybrid")
