"""The release workflow: locks resolved once and shipped, keyless signing in CI that is
checked before publishing, online keys only (actionlint runs in test_workflows.py over
every workflow, this one included; tests/integration/test_ci_release.py runs it)."""

from __future__ import annotations

from tests.support.ci import REPO, load, run_steps, script_of

WF = load("release.yml")


def _scripts(job: str) -> list[str]:
    return [c.strip() for j, _, c in run_steps(WF) if j == job]


def test_release_locks_once_and_builds_locked_from_that_artifact() -> None:
    jobs = WF["jobs"]
    assert _scripts("lock") == [".ci/setup", ".ci/lock"]
    assert jobs["image"]["needs"] == "lock"
    assert [script_of(c) for c in _scripts("image")] == [".ci/setup", ".ci/pin", ".ci/build-arch"]
    assert "--locked" in (REPO / ".ci/build-arch").read_text()
    assert "--arch all" in (REPO / ".ci/lock").read_text()


def test_release_signs_keyless_and_verifies_its_own_identity() -> None:
    assert WF["permissions"] == {"contents": "read"}  # least privilege by default
    [signing] = [n for n in WF["jobs"] if ".ci/sign" in _scripts(n)]
    job = WF["jobs"][signing]
    # Keyless: the ambient GitHub OIDC token, granted to this job only.
    assert job["permissions"]["id-token"] == "write"
    assert all(
        "id-token" not in j.get("permissions", {}) for n, j in WF["jobs"].items() if n != signing
    )
    runs = _scripts(signing)
    # The signing step is the real one (no --dry-run in CI), verified before publishing.
    assert runs.index(".ci/sign") < runs.index(".ci/verify") < runs.index('.ci/publish "$CHANNEL"')
    sign = (REPO / ".ci/sign").read_text()
    assert "-m sigstore sign --bundle" in sign
    assert "--identity-token" not in sign and "--oidc-disable-ambient-providers" not in sign
    verify = (REPO / ".ci/verify").read_text()
    assert "distbuild verify" in verify
    assert '"$GITHUB_SERVER_URL/$GITHUB_WORKFLOW_REF"' in verify
    assert "https://token.actions.githubusercontent.com" in verify


def test_release_unpacks_only_online_keys_and_forgets_them() -> None:
    steps = WF["jobs"]["release"]["steps"]
    [unpack] = [s for s in steps if s.get("run") == ".ci/unpack-keys"]
    assert unpack["env"] == {"TUF_KEYS": "${{ secrets.TUF_KEYS }}"}
    assert steps[-1] == {"name": "Forget the keys", "if": "always()", "run": ".ci/forget-keys"}
