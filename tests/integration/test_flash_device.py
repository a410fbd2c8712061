"""``distbuild flash`` onto real loop devices: bmap writes, read-back verification, refusals."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from distbuild.core import bmap
from distbuild.disk.flash import FlashError, flash
from distbuild.disk.flashdev import Device, DeviceError, refuse_in_use
from distbuild.disk.flashsrc import from_image
from tests.conftest import distbuild_process, error_and_hint
from tests.support.flash import DISK_SIZE, MIB, card, loop_device, make_disk

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_disk(tmp_path_factory.mktemp("board"))


def flash_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return distbuild_process("flash", *args, timeout=120)


def test_mapped_bytes_land_and_holes_keep_the_cards_old_bytes(disk: Path, tmp_path: Path) -> None:
    mapping = bmap.load(disk.with_name("disk.img.bmap"))
    backing = card(tmp_path / "card.bin", 24 * MIB)
    with loop_device(backing) as dev:
        done = flash_cli(disk, "--device", dev, "--json")
        assert done.returncode == 0, done.stderr
        written = dev.read_bytes()
    doc = json.loads(done.stdout)
    image = disk.read_bytes()
    assert doc["bmap"] and doc["bytes"] == DISK_SIZE
    assert doc["written"] == doc["verified"] == mapping.mapped_bytes < DISK_SIZE // 2
    # One write per MiB of each mapped range: no write went to a hole.
    assert len(mapping.extents) > 3
    assert doc["writes"] == sum(-(-e.length // bmap.CHUNK) for e in mapping.extents)
    holes = 0
    pos = 0
    for e in mapping.extents:
        assert written[e.offset : e.offset + e.length] == image[e.offset : e.offset + e.length]
        holes += e.offset - pos
        assert written[pos : e.offset] == b"\xaa" * (e.offset - pos)  # untouched
        pos = e.offset + e.length
    assert holes > DISK_SIZE // 2 - 2 * MIB
    assert written[DISK_SIZE:] == b"\xaa" * (24 * MIB - DISK_SIZE)
    assert "writing" in done.stderr or "checking" in done.stderr  # progress on stderr


def test_verification_reads_the_card_and_catches_a_flipped_block(
    disk: Path, tmp_path: Path
) -> None:
    """The card changes under the write (as a failing or fake card does): the read-back must
    come from the device, not from the page cache that still holds what was written."""
    mapping = bmap.load(disk.with_name("disk.img.bmap"))
    victim = mapping.extents[-1]
    where = victim.offset + victim.length // 2
    backing = card(tmp_path / "card.bin", DISK_SIZE)

    def flip() -> None:
        with backing.open("r+b") as f:
            f.seek(where)
            byte = f.read(1)
            f.seek(where)
            f.write(bytes([byte[0] ^ 0x01]))
            os.fsync(f.fileno())

    with loop_device(backing) as dev:
        with pytest.raises(FlashError) as err:
            flash(from_image(disk, None), dev, after_sync=flip)
        assert f"{victim.offset}-{victim.offset + victim.length}" in err.value.message
        assert "not as written" in err.value.message and err.value.hint
        # Without the flip the same write verifies: the check above is the flip's doing.
        done = flash(from_image(disk, None), dev, force=True)
        assert done.verified == mapping.mapped_bytes


def test_a_mounted_card_is_refused_exactly(disk: Path, tmp_path: Path) -> None:
    backing = card(tmp_path / "card.bin", DISK_SIZE)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(backing)], check=True)
    before = backing.read_bytes()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(backing) as dev:
        subprocess.run(["mount", "-o", "ro,noload", str(dev), str(mnt)], check=True)
        try:
            done = flash_cli(disk, "--device", dev, "--force")
            error, hint = error_and_hint(done.stderr)
            assert done.returncode == 2 and "is mounted" in error and "umount" in hint
            # Exact: a device whose name is a prefix of the mounted one is not refused
            # (the old check refused /dev/sda for a mounted /dev/sdaa1).
            other = Device(Path("/dev/loop"), "loop", os.makedev(7, 255), ())
            refuse_in_use(other)
            with pytest.raises(DeviceError, match="is mounted"):
                refuse_in_use(Device(dev, dev.name, os.stat(dev).st_rdev, ()))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    assert backing.read_bytes() == before


def test_a_mounted_partition_refuses_its_card(disk: Path, tmp_path: Path) -> None:
    backing = tmp_path / "card.bin"
    backing.write_bytes(disk.read_bytes())  # a card flashed before: GPT, ext4 partition
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(backing) as dev:
        part = Path(f"{dev}p1")
        if not part.exists():
            pytest.skip("the kernel did not scan the loop device's partitions")
        subprocess.run(["mount", str(part), str(mnt)], check=True)
        try:
            done = flash_cli(disk, "--device", dev, "--force")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    error, _ = error_and_hint(done.stderr)
    assert done.returncode == 2 and f"{part} on {mnt}" in error


def test_a_card_smaller_than_the_image_is_refused(disk: Path, tmp_path: Path) -> None:
    backing = card(tmp_path / "card.bin", DISK_SIZE // 2)
    with loop_device(backing) as dev:
        done = flash_cli(disk, "--device", dev, "--force")
    error, hint = error_and_hint(done.stderr)
    assert done.returncode == 2 and f"holds {DISK_SIZE // 2} bytes" in error and "larger" in hint
    assert backing.read_bytes() == b"\xaa" * (DISK_SIZE // 2)


def test_a_partitioned_card_needs_force(disk: Path, tmp_path: Path) -> None:
    backing = card(tmp_path / "card.bin", 20 * MIB, b"\x00")
    subprocess.run(["sgdisk", "-n", "1:2048:+4M", str(backing)], check=True, capture_output=True)
    before = backing.read_bytes()
    with loop_device(backing) as dev:
        refused = flash_cli(disk, "--device", dev)
        error, hint = error_and_hint(refused.stderr)
        assert refused.returncode == 2 and "partition" in error and "--force" in hint
        assert backing.read_bytes() == before
        forced = flash_cli(disk, "--device", dev, "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert dev.read_bytes()[:DISK_SIZE] == disk.read_bytes()  # zeros before: all equal


def test_a_partition_is_not_a_card(disk: Path, tmp_path: Path) -> None:
    backing = tmp_path / "card.bin"
    backing.write_bytes(disk.read_bytes())
    with loop_device(backing) as dev:
        part = Path(f"{dev}p1")
        if not part.exists():
            pytest.skip("the kernel did not scan the loop device's partitions")
        done = flash_cli(disk, "--device", part, "--force")
    error, hint = error_and_hint(done.stderr)
    assert done.returncode == 2 and "is a partition" in error and dev.name in hint
