"""``distbuild flash``: the image lands byte for byte, provisioning on its boot partition."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from distbuild.cli.main import main
from distbuild.disk.flashdev import partition_table
from distbuild.disk.provision import boot_files
from distbuild.node.provision import PROVISION_FILE
from tests.conftest import distbuild_process
from tests.support.disk import gpt_with_esp

GOOD = "instance-id: card-1\nlocal-hostname: card-node\n"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A GPT disk image with a FAT boot partition (label esp) and some data after it."""
    disk = gpt_with_esp(tmp_path, "start=83968, name=data\n")
    with disk.open("r+b") as f:
        f.seek(44 << 20)
        f.write(b"data partition bytes")
    return disk


def flash(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return distbuild_process("flash", *args, timeout=120)


def test_flash_writes_the_image_and_the_provisioning_file(image: Path, tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(b"old card contents" * 1000)
    prov = tmp_path / "prov.yaml"
    prov.write_text(GOOD)
    done = flash(image, "--device", card, "--provision", prov, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["provision"] == PROVISION_FILE and doc["bytes"] == image.stat().st_size
    assert not doc["bmap"] and doc["verified"] == doc["written"] > 0
    assert card.stat().st_size == image.stat().st_size
    assert boot_files(card).read(PROVISION_FILE) == GOOD.encode()
    # Everything but the boot partition is the image, byte for byte.
    written, source = card.read_bytes(), image.read_bytes()
    assert written[: 1 << 20] == source[: 1 << 20] and written[42 << 20 :] == source[42 << 20 :]


def test_bad_provisioning_is_refused_before_the_card_is_touched(
    image: Path, tmp_path: Path
) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(b"old card contents")
    prov = tmp_path / "prov.yaml"
    prov.write_text("instance-id: x\nruncmd: [reboot]\n")
    done = flash(image, "--device", card, "--provision", prov)
    assert done.returncode not in (0, 70) and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "hint: " in done.stderr
    assert card.read_bytes() == b"old card contents"


def test_the_image_itself_is_not_a_target(image: Path) -> None:
    before = image.read_bytes()
    done = flash(image, "--device", image)
    assert done.returncode == 2 and "is the image itself" in done.stderr
    assert image.read_bytes() == before


def test_flash_is_a_command_with_json(image: Path, tmp_path: Path) -> None:
    assert main(["flash", str(image), "--device", str(tmp_path / "out.img")]) == 0
    assert (tmp_path / "out.img").read_bytes() == image.read_bytes()


def test_a_file_target_keeps_its_old_bytes_when_the_image_is_not_its_bmaps(
    image: Path, tmp_path: Path
) -> None:
    subprocess.run(["bmaptool", "create", "-o", f"{image}.bmap", str(image)], check=True)
    with image.open("r+b") as f:  # the image changes after its bmap was made
        f.seek(44 << 20)
        f.write(b"DATA")
    card = tmp_path / "card.img"
    card.write_bytes(b"old card contents")
    done = flash(image, "--device", card)
    assert done.returncode == 1 and "do not match its bmap" in done.stderr
    assert "hint: " in done.stderr and "Traceback" not in done.stderr
    assert card.read_bytes() == b"old card contents"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".card")) == []


@pytest.mark.parametrize(("label", "table"), [("gpt", "GPT"), ("dos", "MBR"), (None, None)])
def test_partition_tables_are_recognised(tmp_path: Path, label: str | None, table: str) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(4 << 20))
    if label:
        subprocess.run(
            ["sfdisk", "-q", str(disk)],
            input=f"label: {label}\nstart=2048\n",
            text=True,
            check=True,
        )
    with disk.open("rb") as f:
        assert partition_table(f.fileno()) == table


def test_a_channel_release_is_the_newest_with_the_boards_disk() -> None:
    from distbuild.core.errors import UsageError
    from distbuild.core.releases import Release, ReleaseIndex
    from distbuild.disk.flashsrc import Wanted, pick_release

    disk = {"disk.img": "disk", "disk.img.bmap": "disk-bmap"}
    index = ReleaseIndex(
        "stable",
        (
            Release("node", "2.0", 0, boards={"armv7": {"nanopi-neo": disk}}),
            Release(
                "node", "1.0", 0, boards={"arm64": {"rpi3": disk}, "armv7": {"nanopi-neo": {}}}
            ),
        ),
    )
    pick = pick_release(index, Wanted(board="rpi3"), "channel stable")
    assert (pick[0].version, pick[1]) == ("1.0", "arm64")
    pick = pick_release(index, Wanted(board="nanopi-neo"), "channel stable")
    assert (pick[0].version, pick[1]) == ("2.0", "armv7")
    with pytest.raises(UsageError, match="which arch"):
        pick_release(index, Wanted(), "channel stable")
    with pytest.raises(UsageError, match="no arch 'arm64'"):
        pick_release(index, Wanted(board="nanopi-neo", arch="arm64"), "channel stable")
    with pytest.raises(UsageError, match="no node disk image for board pine64") as err:
        pick_release(index, Wanted(board="pine64"), "channel stable")
    assert err.value.hint == "boards there: nanopi-neo, rpi3"
