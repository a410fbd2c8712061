"""``.ci/verify`` (the release workflow's check of its own signatures) against a real
bundle: the stored Sigstore bundle and the PyPI wheel it signs, laid out as a build
whose artifact CI signed. It passes for the signer's workflow identity only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.ci import REPO, host_env
from tests.support.sigstore import BUNDLE, IDENTITY

pytestmark = pytest.mark.network

SERVER = "https://github.com"


def signed_build(tmp_path: Path, wheel: Path) -> Path:
    build = tmp_path / "out" / "node" / "0.1.2"
    path = f"amd64/{wheel.name}"
    (build / "sigstore" / "amd64").mkdir(parents=True)
    (build / "amd64").mkdir()
    shutil.copy(wheel, build / path)
    shutil.copy(BUNDLE, build / "sigstore" / f"{path}.sigstore.json")
    (build / "build.json").write_text(json.dumps({"artifacts": [{"path": path}]}))
    return build


def verify(build: Path, workflow_ref: str) -> subprocess.CompletedProcess[str]:
    env = host_env(BUILD=str(build), GITHUB_SERVER_URL=SERVER, GITHUB_WORKFLOW_REF=workflow_ref)
    return subprocess.run(
        [str(REPO / ".ci/verify")], env=env, capture_output=True, text=True, timeout=300
    )


def test_ci_verify_passes_a_real_bundle_for_its_workflow(
    tmp_path: Path, signed_wheel: Path
) -> None:
    build = signed_build(tmp_path, signed_wheel)
    proc = verify(build, IDENTITY.removeprefix(SERVER + "/"))
    assert proc.returncode == 0, proc.stderr
    assert f"verified 1 artifacts as {IDENTITY}" in proc.stdout


def test_ci_verify_fails_for_another_workflow_or_a_changed_byte(
    tmp_path: Path, signed_wheel: Path
) -> None:
    build = signed_build(tmp_path, signed_wheel)
    other = "trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v9.9.9"
    proc = verify(build, other)
    assert proc.returncode != 0 and "error: " in proc.stderr and "Traceback" not in proc.stderr
    artifact = build / "amd64" / signed_wheel.name
    data = bytearray(artifact.read_bytes())
    data[100] ^= 1
    artifact.write_bytes(bytes(data))
    proc = verify(build, IDENTITY.removeprefix(SERVER + "/"))
    assert proc.returncode != 0 and "error: " in proc.stderr
