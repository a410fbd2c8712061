"""``distbuild boot`` picks one board's disk from a build that has several."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.cli.disk import _find_disk
from distbuild.core.errors import DistbuildError
from distbuild.record import Artifact, BuildRecord

SHA = "0" * 64


def _build(tmp_path: Path) -> Path:
    arts = []
    for board in ("qemu", "orangepi-pc-qemu"):
        path = f"armv7/disk/{board}/disk.img"
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_bytes(b"")
        arts.append(Artifact("armv7", "disk", path, SHA, 0, board))
    BuildRecord("node", "1.0.0", 0, arts).write(tmp_path)
    return tmp_path


def test_the_board_asked_for_is_booted_qemu_by_default(tmp_path: Path) -> None:
    build = _build(tmp_path)
    assert _find_disk(build, None, "qemu") == (build / "armv7/disk/qemu/disk.img", "armv7")
    disk, arch = _find_disk(build, "armv7", "orangepi-pc-qemu")
    assert disk == build / "armv7/disk/orangepi-pc-qemu/disk.img" and arch == "armv7"


def test_a_board_the_build_has_no_disk_for_is_an_error_listing_what_it_has(
    tmp_path: Path,
) -> None:
    with pytest.raises(DistbuildError, match="no disk image for board bananapi") as e:
        _find_disk(_build(tmp_path), None, "bananapi")
    assert "armv7/orangepi-pc-qemu" in (e.value.hint or "")
