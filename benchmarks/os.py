#!/usr/bin/env python3
"""OS image benchmark: root and disk outputs of the node image, per arch and root file system.

For each arch it measures
- the rootfs build (unpack + customise; the reference for the ratios below),
- the root image (file system + dm-verity) and the disk image: their sizes
  against the unpacked root tree, and their build time as a share of the
  rootfs build,
- the boot under TCG, from qemu start to ``distbuild-os: slot a marked good``
  (median of ``--boots`` boots: the machine is shared, single boots vary),
  per board qemu emulates (``--board``): ``qemu`` is the arch's virt machine,
  ``orangepi-pc-qemu`` the Orange Pi PC (SPL and U-Boot from the SD card),

for squashfs (zstd) and erofs (lz4hc), the two read-only file systems the
root output can use. Targets: root image <= 96 MiB, boot <= 30 s.

Prints a markdown table. Run as root: ``python benchmarks/os.py [--arch amd64,arm64]
[--fs squashfs,erofs] [--board qemu,orangepi-pc-qemu]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distbuild.build import prepare  # noqa: E402
from distbuild.context import ArchBuild, BuildOptions  # noqa: E402
from distbuild.core.arch import parse_arches  # noqa: E402
from distbuild.disk import rootimg  # noqa: E402
from distbuild.disk.diskimg import build_disk  # noqa: E402
from distbuild.disk.rootimg import RootPayload  # noqa: E402
from distbuild.disk.trees import boot_tools, kernel_tree  # noqa: E402
from distbuild.model.board import Board  # noqa: E402
from distbuild.paths import cache_dir  # noqa: E402
from distbuild.qemu import BOARD_MACHINES, boot_disk  # noqa: E402

EPOCH = 1764201600
MIB = 1 << 20


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="all")
    p.add_argument("--fs", default="squashfs,erofs")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--boots", type=int, default=3, help="boots per image; the median is shown")
    p.add_argument("--board", default="qemu,orangepi-pc-qemu", help="boards to boot (per arch)")
    args = p.parse_args()
    rows = []
    for arch in parse_arches([args.arch]):
        with tempfile.TemporaryDirectory(prefix="os-bench-") as tmp:
            work = Path(tmp)
            opts = BuildOptions(
                project=REPO,
                image="node",
                arches=(arch,),
                out=work / "out",
                cache=cache_dir(),
                version="1.0.0",
                source_date_epoch=EPOCH,
            )
            ctx = prepare(opts, arch, work)
            # Cached trees (kernel, boot tools) are not part of the measured builds.
            kernel_tree(ctx)
            boot_tools(ctx)
            start = time.monotonic()
            ctx.rootfs()
            t_rootfs = time.monotonic() - start
            for fs in args.fs.split(","):
                ctx.options = dataclasses.replace(opts, root_fs=fs)
                start = time.monotonic()
                payload = rootimg.build_payload(ctx)
                t_root = time.monotonic() - start
                for board in ctx.recipe.boards:
                    if board.name in args.board.split(",") and (
                        board.name == "qemu" or board.name in BOARD_MACHINES
                    ):
                        row = measure_board(ctx, payload, board, work / f"disk-{fs}.img", args)
                        rows.append(
                            {
                                "arch": arch.name,
                                "fs": fs,
                                "t_rootfs": t_rootfs,
                                "t_root": t_root,
                                **row,
                            }
                        )
                        print(rows[-1], file=sys.stderr)
                shutil.rmtree(payload.image.parent, ignore_errors=True)
                print(rows[-1], file=sys.stderr)
    print(
        "| arch | board | root fs | root tree | root image (with verity) | vs tree | disk image "
        "(apparent / allocated) | rootfs build | root+disk build | ratio | booted line "
        "| marked good |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['board']} | {r['fs']} | {r['tree'] / MIB:.0f} MiB | {r['root'] / MIB:.1f} MiB "
            f"| {100 * r['root'] / r['tree']:.0f}% | {r['disk'] / MIB:.0f} / "
            f"{r['disk_alloc'] / MIB:.0f} MiB | {r['t_rootfs']:.1f} s "
            f"| {r['t_root'] + r['t_disk']:.1f} s | {(r['t_root'] + r['t_disk']) / r['t_rootfs']:.2f} "
            f"| {r['t_booted']:.1f} s | {r['t_good']:.1f} s |"
        )


def measure_board(
    ctx: ArchBuild, payload: RootPayload, board: Board, disk: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Build ``board``'s disk and boot it ``--boots`` times (medians)."""
    start = time.monotonic()
    build_disk(ctx, payload, disk, board)
    t_disk = time.monotonic() - start
    booted, good = [], []
    for _ in range(args.boots):
        result = boot_disk(
            ctx.recipe,
            disk,
            timeout=args.timeout,
            expect=["distbuild-os: booted slot=a", "distbuild-os: slot a marked good"],
            board=None if board.name == "qemu" else board.name,
        )
        booted.append(result.seen[0][1])
        good.append(result.seen[1][1])
    row = {
        "board": board.name,
        "tree": payload.tree_bytes,
        "root": payload.image.stat().st_size,
        "disk": disk.stat().st_size,
        "disk_alloc": allocated(disk),
        "t_disk": t_disk,
        "t_booted": statistics.median(booted),
        "t_good": statistics.median(good),
    }
    disk.unlink()
    return row


if __name__ == "__main__":
    main()
