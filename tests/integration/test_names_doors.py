"""The reproduced name defects, through the real ``distbuild`` process.

On main, ``--version "/../../DIR"`` deleted DIR (the build was swapped into
it), a build record with ``version: "../.."`` made ``publish`` write outside
the repository, and ``push`` to port 99999 was an internal error (exit 70).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, error_and_hint
from tests.support.channel import make_build, make_keys, online_keys


def distbuild(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distbuild.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode not in (0, 70), proc.stderr
    error, _ = error_and_hint(proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return error


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_version_out_of_the_output_directory(tmp_path: Path, project: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "data").write_text("precious\n")
    out = tmp_path / "out"
    for version in (f"/../..{victim}", f"../../{victim.name}", f"../{victim.name}"):
        refused(
            distbuild(
                "--project", project, "image", "--arch", "amd64", "--image", "toolbox",
                "--out", out, "--release", version, "--source-date-epoch", "0",
            ),
            "--release: invalid version",
        )  # fmt: skip
        assert (victim / "sub" / "data").read_text() == "precious\n"
        assert listing(victim) == ["sub", "sub/data"]
        assert not out.exists()


@pytest.mark.parametrize("port", ["99999", "0"])
def test_push_to_a_port_out_of_range(tmp_path: Path, port: str) -> None:
    build = make_build(tmp_path, "node", "1.0")
    error = refused(distbuild("push", build, f"127.0.0.1:{port}/distbuild/node"), "1 to 65535")
    assert f"names port {port}" in error


def test_publish_of_a_record_naming_dot_dot(tmp_path: Path, project: Path) -> None:
    build = make_build(tmp_path / "builds", "node", "1.0")
    record = json.loads((build / "build.json").read_text())
    record["version"] = "../.."
    (build / "build.json").write_text(json.dumps(record))
    keys = online_keys(make_keys(tmp_path / "keys"), tmp_path / "online").path
    area = tmp_path / "area"
    (area / "deep").mkdir(parents=True)
    repo = area / "deep" / "repo"
    proc = distbuild(
        "--project", project, "publish", build, "--channel", "beta", "--repo", repo, "--keys", keys
    )  # fmt: skip
    error = refused(proc, "invalid version '../..'")
    assert "build.json" in error
    assert listing(area) == ["deep"]
