"""The ``disk`` output: a raw, sparse GPT image for first install, plus its bmap.

Partitions (GPT labels): the boot chain's ``esp``/``boot``, ``root-a``
(the root payload), ``root-b`` (empty), ``data`` (empty ext4). Sizes come
from the recipe's ``disk:``. Every partition is made as a file (FAT with
mtools, ext4 with ``mkfs.ext4``, nothing mounted) and copied in without
writing zero blocks, so the image stays sparse. Slot A's boot files and
state are written by the same boot control code a node runs.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distbuild.bootchain import BootChain, get_chain
from distbuild.bootchain.uboot import BOARD_DTB
from distbuild.context import ArchBuild
from distbuild.core import ui
from distbuild.core.bootctl.base import ImageFiles, open_bootctl
from distbuild.core.errors import DistbuildError
from distbuild.core.run import run, which
from distbuild.disk import boards, trees
from distbuild.disk.layout import check_board_disk, read_gpt, slot_dtb
from distbuild.disk.rootimg import RootPayload
from distbuild.model.board import Board
from distbuild.model.recipe import Recipe

MIB = 1 << 20
SECTOR = 512
CHUNK = MIB
DEFAULT_GPT_ENTRIES = 128


@dataclass(frozen=True)
class Partition:
    number: int
    label: str
    type_code: str  # sgdisk's short codes
    start: int  # bytes
    size: int  # bytes


def layout(recipe: Recipe, chain: BootChain, first: int = MIB) -> tuple[list[Partition], int]:
    """The partitions (from byte ``first``, the board's) and the image size, 1 MiB spare at
    the end for the backup GPT."""
    sizes = [
        (chain.partition_label, chain.partition_type, recipe.esp_mib),
        ("root-a", "8300", recipe.root_mib),
        ("root-b", "8300", recipe.root_mib),
        ("data", "8300", recipe.data_mib),
    ]
    parts, start = [], first
    for n, (label, code, mib) in enumerate(sizes, 1):
        parts.append(Partition(n, label, code, start, mib * MIB))
        start += mib * MIB
    return parts, -(-start // MIB) * MIB + MIB


def _guid(*parts: str) -> str:
    """A GUID derived from names, so the same build gives the same disk."""
    return str(uuid.UUID(bytes=hashlib.sha256("/".join(parts).encode()).digest()[:16], version=4))


def check_fits(recipe: Recipe, payload: RootPayload) -> None:
    size = payload.image.stat().st_size
    if size > recipe.root_mib * MIB:
        need = -(-size // MIB)
        raise DistbuildError(
            f"the {payload.arch} root image ({need} MiB with its hash tree) is larger than "
            f"its slot ({recipe.root_mib} MiB)",
            hint=f"raise disk.root_mib to at least {need} in {recipe.path.name}, "
            "or make the image smaller",
        )


def check_boot_fits(recipe: Recipe, payload: RootPayload) -> None:
    """The boot partition must hold both slots' kernel and initramfs, or updates fail."""
    per_slot = payload.kernel.stat().st_size + payload.initrd.stat().st_size
    # FAT overhead and the boot loader: a few MiB; leave room for a bigger next kernel.
    need = -(-(2 * per_slot * 5 // 4 + 4 * MIB) // MIB)
    if need > recipe.esp_mib:
        raise DistbuildError(
            f"the {recipe.boot_chain} boot partition ({recipe.esp_mib} MiB) cannot hold two "
            f"slots' kernel and initramfs ({per_slot / MIB:.0f} MiB each, with room to grow)",
            hint=f"raise disk.esp_mib to at least {need} in {recipe.path.name}",
        )


def build_disk(ctx: ArchBuild, payload: RootPayload, out: Path, board: Board) -> Path:
    """Write ``out`` (the raw disk image of ``board``) and ``out.bmap``, then check its layout."""
    recipe = ctx.recipe
    chain = get_chain(recipe.boot_chain)
    check_fits(recipe, payload)
    check_boot_fits(recipe, payload)
    tools = trees.boot_tools(ctx)
    # Everything the board asks for is checked before a byte is written.
    loaders = boards.plan_loader(board, tools)
    kernel = trees.kernel_tree(ctx)
    dtb = boards.kernel_dtb(board, kernel.root, kernel.version)
    uboot = recipe.boot_chain == "u-boot"
    chain_files = chain.loader_files(recipe, tools)
    extra = boards.partition_files(board, tools, uboot, chain_files)
    parts, total = layout(recipe, chain, board.first_partition)
    work = ctx.workdir / f"disk-{ctx.arch.name}-{board.name}"
    work.mkdir(parents=True, exist_ok=True)
    seed = (ctx.image.name, ctx.version, ctx.arch.name)

    ui.note(f"{ctx.arch.name}: writing the {board.name} disk image ({total // MIB} MiB, sparse)")
    boot = work / "boot.img"
    _fat(boot, parts[0].size, _guid(*seed, "fat")[:8])
    files = ImageFiles(boot, epoch=ctx.epoch)
    loader_files = {**chain_files, **extra}
    for path, content in sorted(loader_files.items()):
        files.write(path, content.read_bytes() if isinstance(content, Path) else content)
    bootctl = open_bootctl(recipe.boot_chain, files, "")
    bootctl.install("a", payload.boot())
    if dtb is not None:
        files.write(f"a/{BOARD_DTB}", dtb.read_bytes())
    bootctl.set_next("a", recipe.boot_tries)
    bootctl.mark_good("a")

    data = work / "data.img"
    _ext4(data, parts[3].size, _guid(*seed, "data"), ctx.epoch)

    with out.open("wb") as f:
        f.truncate(total)
    _partition(out, parts, seed, board)
    copy_sparse(boot, out, parts[0].start)
    copy_sparse(payload.image, out, parts[1].start)
    copy_sparse(data, out, parts[3].start)
    boards.write_loader(out, loaders)
    want = {p: c.read_bytes() if isinstance(c, Path) else c for p, c in extra.items()}
    check_board_disk(board, out, loaders, (parts[0].label, 1), {**want, **slot_dtb(dtb)}, tools)
    bmap = out.with_name(out.name + ".bmap")
    run([which("bmaptool", "bmap-tools"), "create", "-o", bmap, out], capture=True)
    return out


def _partition(disk: Path, parts: list[Partition], seed: tuple[str, ...], board: Board) -> None:
    """Write the GPT (the board's entry count; 128, sgdisk's default, leaves argv as it was)."""
    argv: list[str] = [which("sgdisk", "gdisk"), "--clear", f"--disk-guid={_guid(*seed, 'disk')}"]
    if board.gpt_entries != DEFAULT_GPT_ENTRIES:
        argv.append(f"--resize-table={board.gpt_entries}")
    for p in parts:
        first, last = p.start // SECTOR, (p.start + p.size) // SECTOR - 1
        argv += [
            f"--new={p.number}:{first}:{last}",
            f"--typecode={p.number}:{p.type_code}",
            f"--change-name={p.number}:{p.label}",
            f"--partition-guid={p.number}:{_guid(*seed, p.label)}",
        ]
    if board.hybrid_mbr:
        # Firmware that reads only an MBR (the Raspberry Pi's) finds the boot partition there.
        argv.append("--hybrid=1")
    run([*argv, disk], capture=True)
    if board.hybrid_mbr:
        boards.mark_mbr_fat(disk, parts[0].start // SECTOR)


def _fat(path: Path, size: int, volume_id: str) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    fat = "32" if size >= 64 * MIB else "16"
    run(
        [
            which("mkfs.vfat", "dosfstools"),
            "-F",
            fat,
            "-n",
            "ESP",
            "-i",
            volume_id,
            "--invariant",
            path,
        ],
        capture=True,
    )


def _ext4(path: Path, size: int, fs_uuid: str, epoch: int) -> None:
    with path.open("wb") as f:
        f.truncate(size)
    run(
        [
            which("mkfs.ext4", "e2fsprogs"),
            "-F",
            "-q",
            # 4 KiB blocks, as for a large file system: data is 64 MiB in the
            # image but grows to the whole card on first boot (1 KiB blocks,
            # mke2fs's choice for "small", would cost ~7% in inode tables there).
            "-T",
            "default",
            "-L",
            "data",
            "-U",
            fs_uuid,
            "-E",
            f"hash_seed={fs_uuid},root_owner=0:0",
            path,
        ],
        env={"E2FSPROGS_FAKE_TIME": str(epoch)},
    )


def copy_sparse(src: Path, dest: Path, offset: int) -> None:
    """Copy ``src`` into ``dest`` at ``offset``, skipping zero blocks (dest is all zeros there)."""
    zero = bytes(CHUNK)
    with src.open("rb") as s, dest.open("r+b") as d:
        pos = offset
        while chunk := s.read(CHUNK):
            if chunk != zero[: len(chunk)]:
                d.seek(pos)
                d.write(chunk)
            pos += len(chunk)


def sha256_range(f: BinaryIO, offset: int, length: int) -> str:
    """SHA-256 of ``length`` bytes of an open file from ``offset`` (short if it ends first)."""
    f.seek(offset)
    h = hashlib.sha256()
    left = length
    while left and (chunk := f.read(min(CHUNK, left))):
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def partition_sha256(disk: Path, label: str, length: int | None = None) -> str:
    """SHA-256 of partition ``label`` of ``disk`` (its first ``length`` bytes, if given)."""
    offset, size = partition_offsets(disk)[label]
    with disk.open("rb") as f:
        return sha256_range(f, offset, size if length is None else length)


def partition_offsets(disk: Path) -> dict[str, tuple[int, int]]:
    """GPT label -> (byte offset, byte size), read from the primary GPT."""
    return {label: (start, size) for label, (start, size, _) in read_gpt(disk).partitions.items()}
