"""The GitHub workflows: actionlint-clean, and the build matrix the design asks for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.ci import REPO, WORKFLOWS, load, run_steps, script_of


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


def test_build_matrix_locks_once_then_merges() -> None:
    wf = yaml.safe_load((WORKFLOWS / "build.yml").read_text())
    jobs = wf["jobs"]
    assert jobs["image"]["strategy"]["matrix"]["arch"] == ["armv7", "arm64", "amd64"]
    assert jobs["image"]["needs"] == "lock" and jobs["merge"]["needs"] == "image"
    scripts = {job: [script_of(c) for j, _, c in run_steps(wf) if j == job] for job in jobs}
    assert scripts == {
        "lock": [".ci/setup", ".ci/lock"],
        "image": [".ci/setup", ".ci/pin", ".ci/build-arch"],
        "merge": [".ci/setup", ".ci/merge"],
    }
    # Each arch job builds from the lock job's artifact, downloaded before the build.
    steps = jobs["image"]["steps"]
    download = next(i for i, s in enumerate(steps) if "download-artifact" in s.get("uses", ""))
    assert steps[download]["with"] == {"name": "locks", "path": "locks"}
    assert download < next(i for i, s in enumerate(steps) if "build-arch" in s.get("run", ""))


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_run_step_is_one_ci_script(name: str) -> None:
    """The YAML keeps GitHub's plumbing; what runs is a script the suite can run."""
    wf = load(name)
    steps = run_steps(wf)
    assert steps
    for job, step, command in steps:
        script = REPO / script_of(command)  # asserts: exactly one .ci/ call
        assert script.is_file() and os.access(script, os.X_OK), f"{job}/{step}: {script}"
    for job_name, job in wf["jobs"].items():
        runs = [s["run"] for s in job["steps"] if "run" in s]
        # Checkout first, then the set-up, before anything of ours runs.
        assert job["steps"][0]["uses"].startswith("actions/checkout@"), job_name
        assert runs[0].strip() in (".ci/setup", ".ci/run"), job_name


def test_script_call_check_refuses_shell_code() -> None:
    for command in ("bash .ci/setup", ".ci/lock && .ci/merge", ".ci/pin\n.ci/lock",
                    "echo x >> $GITHUB_ENV", ".ci/publish $(id)", ".ci/../evil"):  # fmt: skip
        with pytest.raises(AssertionError):
            script_of(command)
    assert script_of('.ci/build-arch "$ARCH"') == ".ci/build-arch"


def test_ci_scripts_are_strict_bash() -> None:
    scripts = [p for p in (REPO / ".ci").iterdir() if p.name != "lib.sh"]
    assert len(scripts) >= 10
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text or script.name == "run", script
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_ci_run_checks_formatting() -> None:
    text = (REPO / ".ci/run").read_text()
    assert ".venv/bin/ruff format --check ." in text
    assert text.index("ruff format --check") < text.index(".venv/bin/pytest")
