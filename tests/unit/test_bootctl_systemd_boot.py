"""systemd-boot boot control on a directory and on a FAT image, with power cuts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from distbuild.core.bootctl.base import (
    BootFiles,
    DirFiles,
    ImageFiles,
    SlotBoot,
    SlotState,
    booted_slot,
    open_bootctl,
)
from distbuild.core.bootctl.systemd_boot import SystemdBoot
from distbuild.core.errors import DistbuildError

V1 = SlotBoot("1.0", b"kernel-1" * 1000, b"initrd-1" * 1000, "console=ttyS0 distbuild.version=1.0")
V2 = SlotBoot("2.0", b"kernel-2" * 1000, b"initrd-2" * 1000, "console=ttyS0 distbuild.version=2.0")


def fresh(files: BootFiles, cmdline: str = "") -> SystemdBoot:
    """A boot partition as the disk build leaves it: slot a good, b empty."""
    bc = open_bootctl("systemd-boot", files, cmdline)
    assert isinstance(bc, SystemdBoot)
    bc.install("a", V1)
    bc.set_next("a", 3)
    bc.mark_good("a")
    return bc


def test_fresh_disk_state(tmp_path: Path) -> None:
    bc = fresh(DirFiles(tmp_path))
    assert bc.states() == {
        "a": SlotState("a", True, 0, True, "1.0"),
        "b": SlotState("b", False, 0, False, None),
    }
    assert bc.boot_order() == ["a"]
    entry = (tmp_path / "loader/entries/distbuild-1-a.conf").read_text()
    assert "linux /distbuild/a/linux\n" in entry
    assert entry.splitlines()[-1] == "options console=ttyS0 distbuild.version=1.0 distbuild.slot=a"
    assert (tmp_path / "distbuild/a/linux").read_bytes() == V1.kernel


def test_update_then_firmware_counting_then_fallback(tmp_path: Path) -> None:
    bc = fresh(DirFiles(tmp_path))
    bc.install("b", V2)
    assert not bc.states()["b"].bootable  # written, not yet verified
    assert bc.boot_order() == ["a"]
    bc.set_next("b", 2)
    assert bc.boot_order() == ["b", "a"]
    assert bc.states()["b"] == SlotState("b", True, 2, False, "2.0")
    entries = tmp_path / "loader/entries"
    # What systemd-boot does before each boot of an entry with a counter.
    (entries / "distbuild-1-b+2.conf").rename(entries / "distbuild-1-b+1-1.conf")
    assert bc.boot_order() == ["b", "a"]
    (entries / "distbuild-1-b+1-1.conf").rename(entries / "distbuild-1-b+0-2.conf")
    assert bc.boot_order() == ["a"]  # bad entries sort last: the loader falls back
    assert bc.states()["b"] == SlotState("b", False, 0, False, "2.0")
    assert bc.counters("b") == (0, 2)
    bc.mark_good("a")
    assert sorted(p.name for p in entries.iterdir()) == [
        "distbuild-0-b+0-2.conf",
        "distbuild-1-a.conf",
    ]


def test_mark_good_after_trial(tmp_path: Path) -> None:
    bc = fresh(DirFiles(tmp_path))
    bc.install("b", V2)
    bc.set_next("b")
    entries = tmp_path / "loader/entries"
    (entries / "distbuild-1-b+3.conf").rename(entries / "distbuild-1-b+2-1.conf")
    bc.mark_good("b")
    assert sorted(p.name for p in entries.iterdir()) == ["distbuild-0-a.conf", "distbuild-1-b.conf"]
    assert bc.boot_order() == ["b", "a"]
    # The next update goes to a; b keeps booting until a is verified.
    bc.install("a", V1)
    assert bc.boot_order() == ["b"]


def test_refuses_to_overwrite_the_running_slot(tmp_path: Path) -> None:
    fresh(DirFiles(tmp_path))
    bc = SystemdBoot(DirFiles(tmp_path), "quiet distbuild.slot=a")
    assert bc.booted() == "a"
    with pytest.raises(DistbuildError, match="running system"):
        bc.install("a", V2)
    with pytest.raises(DistbuildError, match="no boot entry"):
        bc.set_next("b")
    with pytest.raises(DistbuildError, match="between 1"):
        bc.set_next("a", 0)


def test_booted_slot_parsing() -> None:
    assert booted_slot("ro distbuild.slot=b panic=5") == "b"
    assert booted_slot("ro distbuild.slot=c") is None
    assert booted_slot("ro") is None


def test_unknown_chain() -> None:
    with pytest.raises(DistbuildError, match="unknown boot chain 'grub'") as e:
        open_bootctl("grub", DirFiles(Path("/nonexistent")))
    assert e.value.hint and "systemd-boot" in e.value.hint


class PowerCut(Exception):
    pass


class CutFiles:
    """A BootFiles that loses power at operation ``cut``, leaving it half done
    the way FAT does: a write leaves a truncated file, a rename leaves both
    names (the new directory entry is written before the old is removed)."""

    def __init__(self, inner: DirFiles, cut: int, torn: bool) -> None:
        self.inner = inner
        self.cut = cut
        self.torn = torn
        self.ops = 0

    def _tick(self) -> bool:
        self.ops += 1
        return self.ops == self.cut

    def read(self, path: str) -> bytes | None:
        return self.inner.read(path)

    def list(self, directory: str) -> list[str]:
        return self.inner.list(directory)

    def write(self, path: str, data: bytes) -> None:
        if self._tick():
            if self.torn:
                self.inner.write(path, data[: len(data) // 2])
            raise PowerCut
        self.inner.write(path, data)

    def rename(self, src: str, dst: str) -> None:
        if self._tick():
            if self.torn:
                self.inner.write(dst, self.inner.read(src) or b"")
            raise PowerCut
        self.inner.rename(src, dst)

    def remove(self, path: str) -> None:
        if self._tick():
            raise PowerCut
        self.inner.remove(path)


def _complete(files: DirFiles, bc: SystemdBoot, slot: str) -> bool:
    """Whether what the loader would boot for ``slot`` is whole: entry, kernel, initrd."""
    want = {"1.0": V1, "2.0": V2}.get(bc.version(slot) or "")
    entry = bc.entries()[slot]
    text = files.read(f"loader/entries/{entry.name}") or b""
    return (
        want is not None
        and text.decode().endswith(f"distbuild.slot={slot}\n")
        and files.read(f"distbuild/{slot}/linux") == want.kernel
        and files.read(f"distbuild/{slot}/initrd") == want.initrd
    )


@pytest.mark.parametrize("torn", [False, True])
def test_power_cut_at_every_step_boots_a_whole_slot(tmp_path: Path, torn: bool) -> None:
    """Update b (install, set-next, bless) and then a again, cutting power at
    each step in turn: the slot the loader picks is always complete."""
    cut = 1
    while True:
        root = tmp_path / f"cut{cut}"
        fresh(DirFiles(root))
        files = CutFiles(DirFiles(root), cut, torn)
        bc = SystemdBoot(files, "")
        try:
            bc.install("b", V2)
            bc.set_next("b")
            bc.mark_good("b")
            bc.install("a", V2)
            bc.set_next("a")
            bc.mark_good("a")
        except PowerCut:
            after = SystemdBoot(DirFiles(root), "")
            order = after.boot_order()
            assert order, f"nothing bootable after a cut at step {cut}"
            assert _complete(DirFiles(root), after, order[0]), f"cut at step {cut}: {order}"
            cut += 1
            continue
        break
    assert cut > 8  # every step of the sequence was cut once


@pytest.fixture
def fat_image(tmp_path: Path) -> Path:
    if not shutil.which("mkfs.vfat") or not shutil.which("mcopy"):
        pytest.skip("needs dosfstools and mtools")
    img = tmp_path / "esp.img"
    with img.open("wb") as f:
        f.truncate(40 << 20)
    subprocess.run(["mkfs.vfat", "-F", "32", str(img)], check=True, capture_output=True)
    return img


def test_same_code_on_a_fat_image(fat_image: Path, tmp_path: Path) -> None:
    """ImageFiles (mtools, no mount) gives the same state as a directory."""
    bc = fresh(ImageFiles(fat_image))
    bc.install("b", V2)
    bc.set_next("b", 3)
    assert bc.boot_order() == ["b", "a"]
    assert bc.states()["b"] == SlotState("b", True, 3, False, "2.0")
    files = ImageFiles(fat_image)
    assert files.read("distbuild/b/initrd") == V2.initrd
    assert files.list("loader/entries") == ["distbuild-0-a.conf", "distbuild-1-b+3.conf"]
    bc.mark_good("b")
    assert files.list("loader/entries") == ["distbuild-0-a.conf", "distbuild-1-b.conf"]
    # The bootctl command line works on images too.
    out = subprocess.run(
        [
            shutil.which("python3") or "python3",
            "-m",
            "distbuild.core.bootctl",
            "--chain",
            "systemd-boot",
            "--image",
            str(fat_image),
            "set-next",
            "a",
            "--tries",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert bc.boot_order() == ["a", "b"]


def test_leftover_copies_of_an_interrupted_rename_are_cleaned(tmp_path: Path) -> None:
    bc = fresh(DirFiles(tmp_path))
    bc.install("b", V2)
    entries = tmp_path / "loader/entries"
    # A rename cut after the new name was written: both names exist.
    shutil.copy(entries / "distbuild-b.conf.off", entries / "distbuild-1-b+3.conf")
    shutil.copy(entries / "distbuild-1-a.conf", entries / "distbuild-0-a.conf")
    assert bc.boot_order()[0] == "b"
    bc.mark_good("b")
    assert sorted(p.name for p in entries.iterdir()) == [
        "distbuild-0-a.conf",
        "distbuild-1-b.conf",
    ]
    bc.mark_good("a")
    assert sorted(p.name for p in entries.iterdir()) == [
        "distbuild-0-b.conf",
        "distbuild-1-a.conf",
    ]
