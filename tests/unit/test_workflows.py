"""The GitHub workflows: actionlint-clean, and the build matrix the design asks for."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github/workflows"


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    assert Path(found).exists(), "actionlint missing: pip install -e '.[test]'"
    return found


def test_actionlint_passes() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert files
    proc = subprocess.run(
        [actionlint(), "-no-color", *files], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github/workflows/bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nosuch }}\n"
    )
    proc = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0


def test_build_matrix_and_merge_job() -> None:
    wf = yaml.safe_load((WORKFLOWS / "build.yml").read_text())
    jobs = wf["jobs"]
    assert jobs["image"]["strategy"]["matrix"]["arch"] == ["armv7", "arm64", "amd64"]
    assert jobs["merge"]["needs"] == "image"
    merge_steps = " ".join(s.get("run", "") for s in jobs["merge"]["steps"])
    assert "distbuild merge" in merge_steps
