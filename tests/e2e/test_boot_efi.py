"""The node OS on UEFI (amd64: OVMF, arm64: AAVMF) with systemd-boot, under TCG.

Each arch builds the node twice (1.0.0, 2.0.0) once per session; every
scenario boots its own sparse copy of the 1.0.0 disk, changed offline with
the project's own commands and boot control, in as few boots as it needs.
An update into B that boots B and is blessed, and a release whose init
fails being tried N times before the loader falls back by itself, are the
updater's e2e story (tests/e2e/test_update.py), installed the way a node does.

Every fresh copy of the disk is another node on its first boot: each makes
its own SSH host key (compared across the module's boots), and the tampered
case starts its RTC before the image's epoch to show the clock floor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.bootctl.base import BootFiles, ImageFiles
from distbuild.core.bootctl.systemd_boot import SystemdBoot
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_offsets
from distbuild.disk.slots import disk_bootctl, payload_from_build, write_slot
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import BootResult, boot_disk
from tests.conftest import EPOCH, REPO, read_record, run_cli
from tests.e2e.conftest import NodeBuilds
from tests.support.node_console import (
    assert_services_up,
    clock_after_floor,
    clock_was_moved,
    host_key,
    rtc_behind_epoch,
)

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]
# Built in the background before the module runs (tests/e2e/conftest.py).
NODE_BUILDS = [(a, v) for a in ("amd64", "arm64") for v in ("1.0.0", "2.0.0")]

BOOT = 120.0  # seconds for one good boot under TCG on a busy 2-core machine
FAILED_TRY = 60.0  # one failing try: firmware, kernel, initramfs, panic=5


@dataclass
class Efi:
    arch: str
    recipe: Recipe
    v1: Path
    v2: Path
    workdir: Path
    host_keys: list[str] = field(default_factory=list)  # one per first boot of a copy

    def new_host_key(self, transcript: str) -> None:
        """This node made a host key no other node of the module has."""
        key = host_key(transcript)
        assert key not in self.host_keys, "two nodes from one disk share an SSH host key"
        self.host_keys.append(key)

    def disk(self, name: str) -> Path:
        """A fresh sparse copy of the 1.0.0 disk."""
        record = read_record(self.v1)
        (rel,) = [
            a["path"] for a in record["artifacts"] if a["kind"] == "disk" and a["arch"] == self.arch
        ]
        copy = self.workdir / f"{name}.img"
        run(["cp", "--sparse=always", self.v1 / rel, copy])
        return copy

    def bootctl(self, disk: Path) -> SystemdBoot:
        bc = disk_bootctl(disk, self.recipe)
        assert isinstance(bc, SystemdBoot)
        return bc

    def write_v2(self, disk: Path, slot: str = "b") -> None:
        write_slot(disk, self.recipe, payload_from_build(self.v2, self.arch), slot)

    def boot(
        self, disk: Path, *expect: str, timeout: float, extra: tuple[str, ...] = ()
    ) -> BootResult:
        log = self.workdir / f"{disk.stem}.console.log"
        with log.open("w") as echo:
            return boot_disk(
                self.recipe,
                disk,
                timeout=timeout,
                expect=expect,
                write=True,
                echo=echo,
                extra=extra,
            )


@pytest.fixture(scope="module", params=["amd64", "arm64"])
def efi(
    request: pytest.FixtureRequest, build_node: NodeBuilds, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Efi]:
    arch = request.param
    v1, v2 = build_node.many((arch, "1.0.0"), (arch, "2.0.0"))
    yield Efi(
        arch, load_recipe(REPO, get_arch(arch)), v1, v2, tmp_path_factory.mktemp(f"efi-{arch}")
    )


def test_fresh_disk_boots_slot_a_and_marks_it_good(
    efi: Efi, capfd: pytest.CaptureFixture[str]
) -> None:
    disk = efi.disk("fresh")
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    rc = run_cli(
        "--project",
        REPO,
        "boot",
        disk,
        "--arch",
        efi.arch,
        "--timeout",
        str(BOOT),
        "--expect",
        f"distbuild-os: booted slot=a version=1.0.0 arch={efi.arch}",
        "--expect",
        "distbuild-os: services up",
        "--expect",
        "distbuild-os: slot a marked good",
    )
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert out.index("booted slot=a") < out.index("slot a marked good")
    assert_services_up(out, "a")
    clock_after_floor(out, EPOCH)
    efi.new_host_key(out)
    # Without --write the image is only read (qemu's copy-on-write snapshot).
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before


def test_flipped_byte_in_root_b_fails_verity_and_a_boots(efi: Efi) -> None:
    """Also a node whose RTC starts long before the image's epoch (1970 on arm64):
    A comes up with its clock at the epoch."""
    disk = efi.disk("tampered")
    efi.write_v2(disk)
    offset, _ = partition_offsets(disk)["root-b"]
    with disk.open("r+b") as f:
        # Inside the first data block, which mounting reads: past the
        # 96-byte superblock, in the first compressed file data.
        f.seek(offset + 2048)
        byte = f.read(1)
        f.seek(offset + 2048)
        f.write(bytes([byte[0] ^ 0x01]))
    efi.bootctl(disk).set_next("b", 1)
    result = efi.boot(
        disk,
        f"distbuild-os: booted slot=a version=1.0.0 arch={efi.arch}",
        "distbuild-os: slot a marked good",
        timeout=FAILED_TRY + BOOT,
        extra=rtc_behind_epoch(efi.arch),
    )
    clock_was_moved(result.transcript, EPOCH)
    clock_after_floor(result.transcript, EPOCH)
    assert_services_up(result.transcript, "a")
    efi.new_host_key(result.transcript)
    assert "is corrupted" in result.transcript  # dm-verity's error, then its panic
    assert result.count("distbuild-initramfs: slot=b") == 1
    assert "booted slot=b" not in result.transcript
    assert efi.bootctl(disk).counters("b") == (0, 1)


class CutAtLastRename:
    """ImageFiles that lose power during the last rename of an operation,
    after the new directory entry was written and before the old one was
    removed (FAT's order): both names exist afterwards."""

    def __init__(self, inner: ImageFiles, renames: int) -> None:
        self.inner = inner
        self.left = renames

    def read(self, path: str) -> bytes | None:
        return self.inner.read(path)

    def write(self, path: str, data: bytes) -> None:
        self.inner.write(path, data)

    def list(self, directory: str) -> list[str]:
        return self.inner.list(directory)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.left -= 1
        if self.left == 0:
            self.inner.write(dst, self.inner.read(src) or b"")
            raise ConnectionAbortedError("power cut")
        self.inner.rename(src, dst)


def test_power_cut_while_flipping_still_boots_a_good_slot(efi: Efi) -> None:
    disk = efi.disk("power-cut")
    efi.write_v2(disk)
    esp = efi.bootctl(disk).files
    assert isinstance(esp, ImageFiles)
    files: BootFiles = CutAtLastRename(esp, renames=2)  # demote a, then enable b: cut there
    with pytest.raises(ConnectionAbortedError):
        SystemdBoot(files, "").set_next("b", 3)
    names = esp.list("loader/entries")
    assert "distbuild-b.conf.off" in names and "distbuild-1-b+3.conf" in names
    result = efi.boot(
        disk,
        f"distbuild-os: booted slot=b version=2.0.0 arch={efi.arch}",
        "distbuild-os: slot b marked good",
        timeout=BOOT,
    )
    assert "booted slot=" in result.transcript
    assert_services_up(result.transcript, "b")
    efi.new_host_key(result.transcript)
    # Blessing the slot also removed the copy the cut left behind.
    assert esp.list("loader/entries") == ["distbuild-0-a.conf", "distbuild-1-b.conf"]
