"""Layout checks every board disk passes at build time, before it is listed in the record.

What a card needs to boot, checked on the bytes written: the loader at its
offsets, byte-identical to its package's files; every partition clear of the
loader and the reserved area; the partition table valid by two independent
tools (gdisk's ``sgdisk -v``, util-linux's ``sfdisk --verify``); the device tree
in slot a and the board's files on the boot partition; U-Boot's env where its
build looks for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from distbuild.bootchain.uboot import BOARD_DTB
from distbuild.core.bootctl.base import ImageFiles
from distbuild.core.errors import DistbuildError
from distbuild.core.run import run, which
from distbuild.disk.boards import (
    MBR_FAT32_LBA,
    BoardError,
    Loader,
    check_env,
    gpt_end,
    mbr_entries,
)
from distbuild.model.board import Board

SECTOR = 512
_HINT = "this is a bug in the board definition or distbuild; the disk was not listed"


def check_board_disk(
    board: Board,
    disk: Path,
    loaders: list[Loader],
    boot: tuple[str, int],
    files: dict[str, bytes],
    tools: Path,
) -> None:
    """Check ``disk`` as built for ``board``; ``boot`` is the boot partition's (label, number),
    ``files`` what its boot partition must hold (path -> bytes)."""
    check_loader(disk, loaders)
    parts = gpt_partitions(disk, board)
    for label, (start, _size, _number) in parts.items():
        clear = max([board.first_partition, *(ld.end for ld in loaders)])
        if start < clear:
            raise BoardError(
                f"{disk.name}: partition {label} starts at byte {start}, inside the board's "
                f"reserved area (up to {clear})",
                hint=_HINT,
            )
    check_table(disk)
    label, number = boot
    if label not in parts:
        raise BoardError(f"{disk.name}: no {label} partition", hint=_HINT)
    if board.hybrid_mbr and (
        MBR_FAT32_LBA,
        parts[label][0] // SECTOR,
        parts[label][1] // SECTOR,
    ) not in mbr_entries(disk):
        raise BoardError(
            f"{disk.name}: the MBR does not list the {label} partition as FAT", hint=_HINT
        )
    fat = ImageFiles(disk, parts[label][0])
    for path, data in sorted(files.items()):
        if fat.read(path) != data:
            raise BoardError(
                f"{disk.name}: {path} missing or different on the boot partition", hint=_HINT
            )
    check_env(board, tools, number, [p[0] for p in parts.values()])


def check_loader(disk: Path, loaders: list[Loader]) -> None:
    """Each loader file sits at its offset, byte for byte."""
    with disk.open("rb") as f:
        for ld in loaders:
            f.seek(ld.offset)
            if f.read(len(ld.data)) != ld.data:
                raise BoardError(
                    f"{disk.name}: the bytes at {ld.offset} are not {ld.name}", hint=_HINT
                )


@dataclass(frozen=True)
class Gpt:
    """The primary GPT: where its entry array is and the partitions it lists."""

    entries_lba: int
    count: int
    entry_size: int
    partitions: dict[str, tuple[int, int, int]]  # label -> (byte offset, byte size, number)


def read_gpt(disk: Path) -> Gpt:
    """The primary GPT of ``disk``; a DistbuildError if it has none."""
    with disk.open("rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        if header[:8] != b"EFI PART":
            raise DistbuildError(f"{disk} has no GPT", hint="is it a distbuild disk image?")
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * SECTOR)
        table = f.read(count * entry_size)
    found: dict[str, tuple[int, int, int]] = {}
    for i in range(count):
        e = table[i * entry_size : (i + 1) * entry_size]
        if e[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        name = e[56:128].decode("utf-16-le").rstrip("\0")
        found[name] = (first * SECTOR, (last - first + 1) * SECTOR, i + 1)
    return Gpt(entries_lba, count, entry_size, found)


def gpt_partitions(disk: Path, board: Board) -> dict[str, tuple[int, int, int]]:
    """GPT label -> (byte offset, byte size, number); the table must be the board's size."""
    gpt = read_gpt(disk)
    if gpt.count != board.gpt_entries or (
        gpt.entries_lba * SECTOR + gpt.count * gpt.entry_size > gpt_end(board)
    ):
        raise BoardError(
            f"{disk.name}: the GPT has {gpt.count} entries at LBA {gpt.entries_lba}, "
            f"not the board's {board.gpt_entries} ending by byte {gpt_end(board)}",
            hint=_HINT,
        )
    return gpt.partitions


def check_table(disk: Path) -> None:
    """The partition table, as gdisk and util-linux each verify it."""
    out = run([which("sgdisk", "gdisk"), "-v", disk], capture=True, check=False)
    text = out.stdout.decode(errors="replace")
    if out.returncode != 0 or "No problems found" not in text:
        raise BoardError(
            f"{disk.name}: sgdisk -v finds problems: {text.strip()[-300:]}", hint=_HINT
        )
    out = run([which("sfdisk", "fdisk"), "--verify", disk], capture=True, check=False)
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    if out.returncode != 0 or "No errors detected" not in text:
        raise BoardError(
            f"{disk.name}: sfdisk --verify finds problems: {text.strip()[-300:]}", hint=_HINT
        )


def slot_dtb(dtb: Path | None) -> dict[str, bytes]:
    """Slot a's device tree, as :func:`check_board_disk` expects it on the boot partition."""
    return {} if dtb is None else {f"a/{BOARD_DTB}": dtb.read_bytes()}
