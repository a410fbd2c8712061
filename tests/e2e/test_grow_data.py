"""``data`` fills a disk four times the image's size (amd64 under TCG, issue 12 #2).

The disk image is copied onto a sparse file four times its size, as ``dd``
onto a larger card would:

1. One boot: the console shows the partition and then the filesystem grown,
   and rcS's ``df`` line a ``data`` of the new size. Offline, ``sfdisk
   --json`` shows ``data`` ending at the last 1 MiB boundary before the
   backup GPT at the disk's end, ``sgdisk -v`` finds no problem, and the ext4
   (its journal replayed, as a mount would) fills the partition and checks
   clean with ``e2fsck -fn``; the sizes grow-data reached are on ``data``, and
   the next boot (which skips it) says only how big ``data`` is.
2. The power is cut when the console says the partition is grown and the
   filesystem is next: the table is already grown on the disk. The next boot
   finishes (``grown to``) and ends with the same full-size, clean ``data``.

The guest has no network (its updater only fails to reach its channel); the
build reads the Debian mirror.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_offsets
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.node import gpt
from distbuild.node.growdata import fs_size
from distbuild.qemu import Guest
from distbuild.record import load_record
from tests.conftest import REPO, Builder

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.network]

ARCH = "amd64"
BOOT = 300.0  # to rcS's data line under TCG on a busy 2-core machine
MIB = 1 << 20
GROWING = "distbuild-os: data: growing partition from 64 MiB to "
FS_NEXT = "; growing the filesystem"
DF = re.compile(r"distbuild-os: data: (\d+) MiB, (\d+) MiB free")


def large_disk(build: Path, workdir: Path) -> tuple[Path, int]:
    """The build's disk image on a sparse disk four times its size; that image's size."""
    record, base = load_record(build)
    disk = workdir / "card.img"
    run(["cp", "--sparse=always", base / record.find("disk", ARCH)[0].path, disk])
    size = disk.stat().st_size
    os.truncate(disk, 4 * size)
    return disk, size


def boot_to_df(recipe: Recipe, disk: Path, log: Path) -> tuple[str, int]:
    """Boot until rcS prints data's size, then cut the power; the transcript and that size."""
    with log.open("w") as echo, Guest(recipe, disk, write=True, echo=echo) as g:
        start = g.expect("distbuild-initramfs: slot=", BOOT)
        g.expect("distbuild-os: data: ", BOOT)
        end = g.watch(lambda: DF.search(g.transcript) is not None, 60, "rcS's data line")
        g.power_cut()
    m = DF.search(g.transcript)
    assert m is not None
    # Measured, not judged: the initramfs's root and data, rcS's mounts, grow-data.
    print(f"{log.stem}: {end - start:.1f}s from the initramfs to the data line")
    return g.transcript, int(m.group(1))


def check_offline(disk: Path, workdir: Path) -> int:
    """The table and the ext4 on ``disk`` fill it and are clean; data's size in bytes."""
    sectors = disk.stat().st_size // gpt.SECTOR
    table = json.loads(run(["sfdisk", "--json", disk], capture=True).stdout)["partitiontable"]
    data = next(p for p in table["partitions"] if p["name"] == "data")
    assert table["lastlba"] == sectors - 34  # the backup GPT is at the disk's end
    assert data["start"] + data["size"] == (table["lastlba"] + 1) // 2048 * 2048
    assert data is table["partitions"][-1]
    verify = run(["sgdisk", "-v", disk], capture=True).stdout.decode()
    assert "No problems found" in verify, verify
    offset, size = partition_offsets(disk)["data"]
    assert (offset, size) == (data["start"] * 512, data["size"] * 512)

    part = workdir / "data.img"
    run(["dd", f"if={disk}", f"of={part}", "bs=1M", f"skip={offset // MIB}",
         f"count={size // MIB}", "conv=sparse", "status=none"])  # fmt: skip
    # The power was cut with data mounted: replay its journal as a mount would.
    run(["e2fsck", "-E", "journal_only", "-y", part], check=False, capture=True)
    fsck = run(["e2fsck", "-fn", part], check=False, capture=True)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    with part.open("rb") as f:
        found = fs_size(gpt.Disk(f.fileno()), 0)
    assert found is not None
    fs_bytes, group = found
    assert size - group < fs_bytes <= size, (fs_bytes, size)
    # What lets later boots skip grow-data, in /var's overlay on data.
    done = run(["debugfs", "-R", "cat /var/upper/lib/distbuild/data-grown", part], capture=True)
    assert done.stdout.decode() == f"disk={sectors} data={size // 512}\n"
    part.unlink()
    return size


def test_data_fills_a_disk_four_times_the_image(build_node: Builder, tmp_path: Path) -> None:
    recipe = load_recipe(REPO, get_arch(ARCH))
    disk, image_size = large_disk(build_node(ARCH), tmp_path)

    transcript, df_mib = boot_to_df(recipe, disk, tmp_path / "first.console.log")
    assert GROWING in transcript and FS_NEXT in transcript
    size = check_offline(disk, tmp_path)
    assert f"distbuild-os: data: grown to {size // MIB} MiB" in transcript
    assert size > 3 * image_size
    assert df_mib > 0.85 * size / MIB  # df: the filesystem minus its metadata

    # Later boots find nothing to do, and say only how big data is.
    again, df_again = boot_to_df(recipe, disk, tmp_path / "second.console.log")
    assert "growing" not in again and df_again == df_mib


def test_a_power_cut_while_growing_is_finished_by_the_next_boot(
    build_node: Builder, tmp_path: Path
) -> None:
    recipe = load_recipe(REPO, get_arch(ARCH))
    disk, _ = large_disk(build_node(ARCH), tmp_path)

    with (
        (tmp_path / "cut.console.log").open("w") as echo,
        Guest(recipe, disk, write=True, echo=echo) as g,
    ):
        g.expect(GROWING, BOOT)
        g.expect(FS_NEXT, 60)
        g.power_cut()  # between the partition table and resize2fs
    assert "grown to" not in g.transcript
    # The table is committed (both headers valid); the filesystem is still small.
    offset, size = partition_offsets(disk)["data"]
    with disk.open("rb") as f:
        found = fs_size(gpt.Disk(f.fileno()), offset // gpt.SECTOR)
    assert found is not None and found[0] == 64 * MIB

    transcript, df_mib = boot_to_df(recipe, disk, tmp_path / "after.console.log")
    assert GROWING not in transcript  # the table was done ...
    assert f"distbuild-os: data: grown to {size // MIB} MiB" in transcript  # ... the fs is now
    assert check_offline(disk, tmp_path) == size
    assert df_mib > 0.85 * size / MIB
