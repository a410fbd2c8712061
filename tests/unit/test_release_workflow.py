"""The release workflow signs keyless in CI and checks what it signed (actionlint runs in
test_workflows.py over every workflow, this one included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github/workflows/release.yml"


def _steps(job: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_release_signs_keyless_and_verifies_its_own_identity() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf["permissions"] == {"contents": "read"}  # least privilege by default
    signing = [j for j in wf["jobs"].values() if "sigstore sign" in _steps(j)]
    assert len(signing) == 1
    job = signing[0]
    # Keyless: the ambient GitHub OIDC token, granted to this job only.
    assert job["permissions"]["id-token"] == "write"
    runs = _steps(job)
    assert "python -m sigstore sign --bundle" in runs
    assert "--identity-token" not in runs and "--oidc-disable-ambient-providers" not in runs
    # It verifies offline with the identity the certificate will carry, then publishes.
    assert "distbuild verify" in runs
    assert "${{ github.server_url }}/${{ github.workflow_ref }}" in runs
    assert "--issuer https://token.actions.githubusercontent.com" in runs
    assert (
        runs.index("sigstore sign")
        < runs.index("distbuild verify")
        < runs.index("distbuild publish")
    )
