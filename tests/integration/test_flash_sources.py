"""``distbuild flash`` from a build and from a channel served over loopback, through TUF."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import publish
from distbuild.channel.serve import Server, serving
from distbuild.core import bmap
from tests.conftest import distbuild_process, error_and_hint
from tests.support.boards import add_board_files
from tests.support.channel import channel, make_build, make_keys
from tests.support.flash import DISK_SIZE, MIB, card, loop_device, make_disk

BOARD = "orangepi-pc-qemu"


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real board disks (GPT + ext4, bmaptool bmaps), different bytes."""
    tmp = tmp_path_factory.mktemp("disks")
    return {board: make_disk(tmp / board) for board in (BOARD, "nanopi-neo")}


@pytest.fixture
def build(tmp_path: Path, disks: dict[str, Path]) -> Path:
    """A build of 'node' 1.0 for armv7 with two boards' disks, in the shared layout."""
    directory = make_build(tmp_path / "out", "node", "1.0", arches=("armv7",))
    for board, disk in disks.items():
        real = {
            f"disk/{board}/disk.img": ("disk", disk.read_bytes()),
            f"disk/{board}/disk.img.bmap": (
                "disk-bmap",
                disk.with_name("disk.img.bmap").read_bytes(),
            ),
        }
        add_board_files(directory, "armv7", board, dtb=False, **real)
    return directory


@pytest.fixture
def served(tmp_path: Path, build: Path) -> Iterator[tuple[Server, Path, Path]]:
    """The build published to channel 'stable', served on 127.0.0.1: (server, repo, root)."""
    keys: KeyStore = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    repo.mkdir()
    publish(repo, channel("stable"), build, keys)
    root = tmp_path / "1.root.json"
    root.write_bytes((repo / "stable" / "metadata" / "1.root.json").read_bytes())
    with serving(repo) as server:
        yield server, repo, root


def flash_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return distbuild_process("flash", *args, timeout=120)


def _mapped_equal(written: bytes, disk: Path) -> None:
    image = disk.read_bytes()
    for e in bmap.load(disk.with_name("disk.img.bmap")).extents:
        assert written[e.offset : e.offset + e.length] == image[e.offset : e.offset + e.length]


def test_flash_from_a_build_picks_the_boards_disk(
    build: Path, disks: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "card.img"
    done = flash_cli(build, "--board", BOARD, "--device", out, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["bmap"] and doc["source"] == f"node 1.0 armv7 {BOARD}"
    assert out.read_bytes() == disks[BOARD].read_bytes()  # a new file: holes read zeros
    which = flash_cli(build / "build.json", "--device", out)
    error, hint = error_and_hint(which.stderr)
    assert which.returncode == 2 and "which board?" in error and "--board" in hint


@pytest.mark.root
def test_flash_from_a_channel_through_tuf_onto_a_loop_device(
    served: tuple[Server, Path, Path], disks: dict[str, Path], tmp_path: Path
) -> None:
    server, _, root = served
    backing = card(tmp_path / "card.bin", 20 * MIB)
    with loop_device(backing) as dev:
        done = flash_cli(
            f"{server.url}/stable",
            "--board",
            BOARD,
            "--trust-root",
            root,
            "--device",
            dev,
            "--json",
        )
        assert done.returncode == 0, done.stderr
        written = dev.read_bytes()
    doc = json.loads(done.stdout)
    assert doc["source"] == f"channel stable: node 1.0 armv7 {BOARD}" and doc["bmap"]
    _mapped_equal(written, disks[BOARD])
    assert written[DISK_SIZE:] == b"\xaa" * (20 * MIB - DISK_SIZE)
    assert doc["written"] < DISK_SIZE // 2  # holes were not fetched into the card


@pytest.mark.parametrize("file", ["disk.img", "disk.img.bmap"])
def test_a_tampered_target_is_refused_and_the_card_untouched(
    served: tuple[Server, Path, Path], tmp_path: Path, file: str
) -> None:
    server, repo, root = served
    (stored,) = (repo / "stable" / "targets").rglob(f"*{BOARD}/*.{file}")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    stored.write_bytes(bytes(data))
    out = card(tmp_path / "card.img", 4096)
    done = flash_cli(
        f"{server.url}/stable", "--board", BOARD, "--trust-root", root, "--device", out
    )
    error, hint = error_and_hint(done.stderr)
    assert done.returncode not in (0, 70) and "not the ones the channel signed" in error
    assert "tampering" in hint
    assert out.read_bytes() == b"\xaa" * 4096


def test_channel_refusals_say_what_to_pass(
    served: tuple[Server, Path, Path], tmp_path: Path
) -> None:
    server, _, root = served
    out = tmp_path / "card.img"
    url = f"{server.url}/stable"
    for args, needle, hint in (
        ((), "which board?", "--board"),
        (("--board", "rpi3"), "no node disk image for board rpi3", "nanopi-neo"),
        (("--board", BOARD, "--release", "9.9"), "no node 9.9", "1.0"),
    ):
        done = flash_cli(url, *args, "--trust-root", root, "--device", out)
        error, got_hint = error_and_hint(done.stderr)
        assert done.returncode == 2 and needle in error and hint in got_hint, done.stderr
    untrusted = flash_cli(url, "--board", BOARD, "--device", out)
    error, hint = error_and_hint(untrusted.stderr)
    assert "trust root" in error and "--trust-root" in hint
    assert not out.exists()


def test_flash_from_a_local_channel_repository(
    served: tuple[Server, Path, Path], disks: dict[str, Path], tmp_path: Path
) -> None:
    _, repo, _ = served
    out = tmp_path / "card.img"
    done = flash_cli("stable", "--repo", repo, "--board", "nanopi-neo", "--device", out, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"] == "channel stable: node 1.0 armv7 nanopi-neo"
    assert out.read_bytes() == disks["nanopi-neo"].read_bytes()
    (stored,) = (repo / "stable" / "targets").rglob("*nanopi-neo/*.disk.img")
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    out.write_bytes(b"old")
    tampered = flash_cli("stable", "--repo", repo, "--board", "nanopi-neo", "--device", out)
    error, _ = error_and_hint(tampered.stderr)
    assert tampered.returncode not in (0, 70) and "fails TUF verification" in error
    assert out.read_bytes() == b"old"
