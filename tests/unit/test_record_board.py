"""Board artifacts in the build record (DESIGN.md §3): ``board`` is kept, checked, and optional."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distbuild.record import Artifact, BuildRecord, RecordError, load_record

SHA = "0" * 64


def _write(tmp_path: Path, artifacts: list[Artifact]) -> Path:
    (tmp_path / "armv7/disk/bananapi").mkdir(parents=True)
    (tmp_path / "armv7/disk/bananapi/disk.img").write_bytes(b"")
    BuildRecord("node", "1.0.0", 0, artifacts).write(tmp_path)
    return tmp_path


def test_a_board_artifact_keeps_its_board_and_others_have_none(tmp_path: Path) -> None:
    board = Artifact("armv7", "disk", "armv7/disk/bananapi/disk.img", SHA, 0, "bananapi")
    plain = Artifact("armv7", "root", "armv7/disk/bananapi/disk.img", SHA, 0)
    _write(tmp_path, [board, plain])
    entries = json.loads((tmp_path / "build.json").read_text())["artifacts"]
    assert [e.get("board") for e in entries] == ["bananapi", None]
    assert "board" not in entries[1]
    record, _ = load_record(tmp_path)
    assert record.find("disk", "armv7", board="bananapi") == [board]
    assert record.find("disk", "armv7", board="nanopi-neo") == []
    assert record.find("root", "armv7") == [plain]


@pytest.mark.parametrize("board", ["../etc", "Bad Board", "", "a/b"])
def test_a_hostile_board_name_is_refused(tmp_path: Path, board: str) -> None:
    _write(tmp_path, [Artifact("armv7", "disk", "armv7/disk/bananapi/disk.img", SHA, 0, board)])
    with pytest.raises(RecordError):
        load_record(tmp_path)
