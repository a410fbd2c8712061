"""Growing ``data`` to the end of its disk (distbuild.node.gpt, issue 12 #2).

Real tables made by ``sgdisk`` on sparse files, laid out as a distbuild disk
image is (1 MiB aligned, ``data`` last, 1 MiB spare), then "written onto a
card" four times the size. After the growth ``sgdisk -v`` and ``sfdisk
--verify`` check both headers and every CRC. A power cut is a write that
never happens: the run stops before its Nth write, and the disk as it stands
then is what the next boot finds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distbuild.node import gpt
from distbuild.node.growdata import DONE, fs_size

pytestmark = pytest.mark.skipif(
    not (shutil.which("sgdisk") and shutil.which("sfdisk")), reason="needs sgdisk and sfdisk"
)

MIB = 1 << 20
# label, MiB: a small image of the same shape as the node's.
LAYOUT = [("esp", 4), ("root-a", 8), ("root-b", 8), ("data", 4)]
IMAGE = (1 + sum(m for _, m in LAYOUT) + 1) * MIB


def make_image(path: Path, layout: list[tuple[str, int]] = LAYOUT) -> Path:
    with path.open("wb") as f:
        f.truncate(IMAGE)
    argv, start = ["sgdisk", "--clear"], 2048
    for n, (label, mib) in enumerate(layout, 1):
        end = start + mib * 2048 - 1
        argv += [f"--new={n}:{start}:{end}", f"--change-name={n}:{label}"]
        start = end + 1
    subprocess.run([*argv, str(path)], check=True, capture_output=True)
    return path


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """The image on a card four times its size."""
    path = make_image(tmp_path / "card.img")
    os.truncate(path, 4 * IMAGE)
    return path


@contextmanager
def opened(path: Path, disk_class: type[gpt.Disk] = gpt.Disk) -> Iterator[gpt.Disk]:
    fd = os.open(path, os.O_RDWR)
    try:
        yield disk_class(fd)
    finally:
        os.close(fd)


def grow(path: Path) -> list[str]:
    with opened(path) as disk:
        return gpt.grow(disk)[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sfdisk_json(path: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["sfdisk", "--json", str(path)], check=True, capture_output=True)
    return json.loads(out.stdout)["partitiontable"]  # type: ignore[no-any-return]


def assert_verifies(path: Path) -> None:
    sg = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
    assert sg.returncode == 0 and "No problems found" in sg.stdout, sg.stdout + sg.stderr
    sf = subprocess.run(["sfdisk", "--verify", str(path)], capture_output=True, text=True)
    assert sf.returncode == 0 and "No errors detected" in sf.stdout, sf.stdout + sf.stderr


def test_data_grows_to_the_last_mib_before_the_backup_at_the_disks_end(card: Path) -> None:
    before = sfdisk_json(card)
    assert grow(card) == ["backup entries", "backup header", "primary table", "protective MBR"]
    assert_verifies(card)
    after = sfdisk_json(card)
    sectors = 4 * IMAGE // 512
    assert after["lastlba"] == sectors - 34
    *others, data = after["partitions"]
    assert others == before["partitions"][:3]  # untouched, GUIDs and all
    old = before["partitions"][3]
    assert data == {**old, "size": sectors - 2048 - old["start"]}  # 1 MiB spare, as built
    assert after["id"] == before["id"]


def test_a_second_run_writes_nothing(card: Path) -> None:
    grow(card)
    done = digest(card)
    assert grow(card) == []
    assert digest(card) == done


def test_a_disk_of_the_images_own_size_is_left_alone(tmp_path: Path) -> None:
    image = make_image(tmp_path / "exact.img")
    before = digest(image)
    with opened(image) as disk:
        plan, writes = gpt.grow(disk)
    assert not plan.grows and writes == [] and digest(image) == before


class PowerCut(Exception):
    pass


def cut_after(n: int) -> type[gpt.Disk]:
    class Cut(gpt.Disk):
        left = n

        def write(self, lba: int, data: bytes) -> None:
            if Cut.left == 0:
                raise PowerCut
            Cut.left -= 1
            super().write(lba, data)

    return Cut


@pytest.mark.parametrize("writes", [0, 1, 2, 3])
def test_a_power_cut_after_any_write_is_finished_by_the_next_run(
    card: Path, tmp_path: Path, writes: int
) -> None:
    whole = tmp_path / "whole.img"
    shutil.copyfile(card, whole)
    grow(whole)
    with opened(card, cut_after(writes)) as disk, pytest.raises(PowerCut):
        gpt.grow(disk)
    # What the kernel reads at boot: a valid primary, and a valid table where it points.
    with opened(card) as disk:
        primary = gpt.read_table(disk, 1)
        backup = gpt.read_table(disk, primary.header.alternate_lba)
        assert backup.entries == primary.entries
        grown = primary.header.alternate_lba == disk.sectors - 1
    assert grown == (writes >= 3)  # the primary changes in one write, the third
    grow(card)
    assert_verifies(card)
    assert digest(card) == digest(whole)


# -- hostile tables: refused before a byte is written ----------------------------------


def rewrite_primary(path: Path, entries: bytes | None = None, **fields: int) -> None:
    """Change the primary header's ``fields`` (and entries), with valid CRCs."""
    with opened(path) as disk:
        t = gpt.read_table(disk, 1)
        raw = t.entries if entries is None else entries
        h = dataclasses.replace(t.header, entries_crc=zlib.crc32(raw), **fields)
        disk.write(1, h.pack())
        disk.write(2, raw[: h.entries_sectors * 512] if entries is not None else disk.read(2))


def set_entry(path: Path, index: int, first: int, last: int) -> bytes:
    with opened(path) as disk:
        entries = bytearray(gpt.read_table(disk, 1).entries)
    struct.pack_into("<QQ", entries, index * 128 + 32, first, last)
    return bytes(entries)


def crc_broken(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(2 * 512 + 3 * 128 + 56)  # data's name: the entries CRC no longer matches
        f.write("Data".encode("utf-16-le"))


def header_crc_broken(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(512 + 48)  # last usable LBA, without a new header CRC
        f.write(struct.pack("<Q", 12345))


def refuses(path: Path, message: str) -> None:
    before = digest(path)
    with opened(path) as disk, pytest.raises(gpt.GptError, match=message) as e:
        gpt.grow(disk)
    assert e.value.hint and digest(path) == before


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: rewrite_primary(p, entry_count=1 << 20), "entries"),
        (lambda p: rewrite_primary(p, entry_count=0), "0 entries"),
        (lambda p: rewrite_primary(p, entry_size=100), "entries of 100 bytes"),
        (lambda p: rewrite_primary(p, entry_size=1 << 16), "entries of 65536 bytes"),
        (lambda p: rewrite_primary(p, entries_lba=1 << 40), "entries at sector"),
        (lambda p: rewrite_primary(p, last_usable=1 << 40), "usable sectors"),
        (lambda p: rewrite_primary(p, my_lba=7), "says it is at sector 7"),
        (lambda p: rewrite_primary(p, alternate_lba=1 << 40), "beyond this disk"),
        (crc_broken, "entries CRC"),
        (header_crc_broken, "header CRC"),
        (lambda p: rewrite_primary(p, set_entry(p, 2, 18432, 40000)), "overlapping"),
    ],
)
def test_a_hostile_table_is_refused_without_a_write(
    card: Path, spoil: object, message: str
) -> None:
    spoil(card)  # type: ignore[operator]
    refuses(card, message)


def test_data_must_be_the_last_partition(tmp_path: Path) -> None:
    path = make_image(
        tmp_path / "card.img", [("esp", 4), ("data", 4), ("root-a", 8), ("root-b", 8)]
    )
    os.truncate(path, 4 * IMAGE)
    refuses(path, "a partition after 'data'")


def test_exactly_one_data_partition(tmp_path: Path) -> None:
    path = make_image(tmp_path / "card.img", [("esp", 4), ("root-a", 8), ("root-b", 8), ("x", 4)])
    os.truncate(path, 4 * IMAGE)
    refuses(path, "0 partitions labelled 'data'")


def test_a_disk_smaller_than_its_table_is_refused(tmp_path: Path) -> None:
    small = make_image(tmp_path / "small.img")
    os.truncate(small, IMAGE - 8192)  # the backup header is cut off
    refuses(small, "beyond this disk")


def test_no_gpt_is_refused(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"")
    os.truncate(blank, IMAGE)
    refuses(blank, "no GPT signature")


# -- the node command ---------------------------------------------------------------------


def fake_node(root: Path, card: Path) -> None:
    """A node root whose sysfs shows ``card`` as /dev/vda with data as vda4."""
    table = sfdisk_json(card)
    data = table["partitions"][3]
    sysdisk = root / "sys/devices/virtio0/block/vda"
    (sysdisk / "vda4").mkdir(parents=True)
    (sysdisk / "size").write_text(f"{card.stat().st_size // 512}\n")
    (sysdisk / "vda4/uevent").write_text("MAJOR=254\nMINOR=4\nDEVNAME=vda4\nPARTNAME=data\n")
    (sysdisk / "vda4/partition").write_text("4\n")
    (sysdisk / "vda4/size").write_text(f"{data['size']}\n")
    (root / "sys/class/block").mkdir(parents=True)
    (root / "sys/class/block/vda4").symlink_to(sysdisk / "vda4")
    (root / "dev").mkdir()
    shutil.copyfile(card, root / "dev/vda")


def node_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "distbuild.node.cli", "--root", str(root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_grow_data_reports_json_and_then_nothing_to_do(card: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    fake_node(root, card)
    first = node_cli(root, "grow-data", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["table_writes"] == [
        "backup entries",
        "backup header",
        "primary table",
        "protective MBR",
    ]
    assert doc["partition_mib"] == (4 * IMAGE // MIB) - 1 - 21
    assert doc["kernel"] == "not a block device" and doc["filesystem"] == "no ext4 found"
    assert_verifies(root / "dev/vda")
    again = node_cli(root, "grow-data")
    assert again.returncode == 0 and again.stdout == ""  # later boots: silent
    assert not (root / DONE.lstrip("/")).exists()  # no filesystem grown: not done


def test_grow_data_leaves_the_sizes_rcs_skips_it_by_once_done(card: Path, tmp_path: Path) -> None:
    grow(card)
    data = sfdisk_json(card)["partitions"][3]
    offset, size = data["start"] * 512, data["size"] * 512
    mkfs = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", f"offset={offset}", str(card)]
    subprocess.run([*mkfs, str(size // 4096)], check=True, capture_output=True)
    root = tmp_path / "root"
    fake_node(root, card)
    out = node_cli(root, "grow-data", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["table_writes"] == [] and doc["filesystem"] == "full size"
    done = (root / DONE.lstrip("/")).read_text()
    assert done == f"disk={4 * IMAGE // 512} data={data['size']}\n"


def test_grow_data_on_a_hostile_table_says_error_and_hint(card: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    fake_node(root, card)
    crc_broken(root / "dev/vda")
    out = node_cli(root, "grow-data")
    assert out.returncode not in (0, 70)
    assert out.stderr.startswith("error: the partition table") and "\nhint: " in out.stderr
    assert "Traceback" not in out.stderr


def test_fs_size_reads_the_ext4_superblock(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    image.write_bytes(b"")
    os.truncate(image, 64 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    with opened(image) as disk:
        found = fs_size(disk, 0)
    assert found is not None and found[0] == 64 * MIB and 0 < found[1] <= 128 * MIB
    (tmp_path / "zero.img").write_bytes(bytes(MIB))
    with opened(tmp_path / "zero.img") as disk:
        assert fs_size(disk, 0) is None
