"""``--json`` of the commands that need the Debian mirror (the rest: tests/unit/test_cli_vocabulary.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distbuild.cli.main import main
from distbuild.rootfs.lock import lock_path, read_lock
from tests.conftest import REPO


@pytest.mark.slow
@pytest.mark.network
def test_lock_json(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lock --json`` lists every lock it wrote, with the packages each one holds."""
    project = tmp_path / "project"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, project / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    capsys.readouterr()
    argv = ["--project", str(project), "lock", "--image", "toolbox", "--arch", "amd64", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(e["arch"], e["lock"]) for e in doc["locks"]] == [("amd64", "toolbox")]
    [entry] = doc["locks"]
    assert entry["path"] == str(lock_path(project, "toolbox", "amd64"))
    assert entry["packages"] == len(read_lock(Path(entry["path"])).packages) > 0
