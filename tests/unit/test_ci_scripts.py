"""The .ci scripts' contracts on their own: inputs from the environment, GITHUB_ENV
exports, and clear refusals (error + hint, nothing half-done)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.ci import REPO, host_env, online_keys, read_github_env, secret_of


def ci(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".ci" / script), *args],
        env=host_env(**env), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def refused(proc: subprocess.CompletedProcess[str], words: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"error: {words}" in proc.stderr and "\nhint: " in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_pin_exports_the_commit_time_and_the_tag_version(tmp_path: Path) -> None:
    github_env = tmp_path / "github_env"
    github_env.write_text("EARLIER=kept\n")
    tag = {"GITHUB_REF": "refs/tags/v1.2.3", "GITHUB_REF_NAME": "v1.2.3"}
    proc = ci("pin", env={"GITHUB_ENV": str(github_env), "GITHUB_WORKSPACE": str(REPO), **tag})
    assert proc.returncode == 0, proc.stderr
    commit_time = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True
    ).stdout.strip()
    assert read_github_env(github_env) == {
        "EARLIER": "kept",
        "SOURCE_DATE_EPOCH": commit_time,
        "VERSION": "1.2.3",
    }
    # A branch build pins the time only; outside GitHub the exports are printed.
    proc = ci("pin", env={"GITHUB_REF": "refs/heads/main", "GITHUB_REF_NAME": "main"})
    assert proc.returncode == 0 and proc.stdout == f"export SOURCE_DATE_EPOCH={commit_time}\n"


def test_pin_refuses_a_tag_that_is_no_version(tmp_path: Path) -> None:
    env = {
        "GITHUB_ENV": str(tmp_path / "e"),
        "GITHUB_REF": "refs/tags/vX;id",
        "GITHUB_REF_NAME": "vX;id",
    }
    refused(ci("pin", env=env), "tag vX;id is not a release tag")
    assert "VERSION" not in read_github_env(tmp_path / "e")


def a_build(tmp_path: Path, paths: list[str]) -> Path:
    build = tmp_path / "out" / "toolbox" / "1.0.0"
    build.mkdir(parents=True)
    record = {"artifacts": [{"path": p, "kind": "x"} for p in paths]}
    (build / "build.json").write_text(json.dumps(record))
    for p in paths:
        (build / p).parent.mkdir(parents=True, exist_ok=True)
        (build / p).write_bytes(b"bytes of " + p.encode())
    return build


def test_sign_outside_github_fails_clearly_and_signs_nothing(tmp_path: Path) -> None:
    build = a_build(tmp_path, ["amd64/root.img", "index.json"])
    refused(ci("sign", env={"BUILD": str(build)}), "no ambient OIDC credential")
    assert not (build / "sigstore").exists()


def test_sign_dry_run_lists_what_it_would_sign_and_signs_nothing(tmp_path: Path) -> None:
    build = a_build(tmp_path, ["index.json", "amd64/root.img", "amd64/root.img"])
    proc = ci("sign", "--dry-run", env={"BUILD": str(build)})
    assert proc.returncode == 0, proc.stderr
    assert "nothing was signed" in proc.stdout
    assert (build / "sigstore/would-sign.txt").read_text() == "amd64/root.img\nindex.json\n"
    assert list((build / "sigstore").iterdir()) == [build / "sigstore/would-sign.txt"]
    # ... and verifying that build finds no signature to pass.
    env = {"BUILD": str(build), "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/release.yml@refs/tags/v1.0.0"}  # fmt: skip
    refused(ci("verify", env=env), "no bundle for amd64/root.img")


def test_sign_refuses_an_artifact_path_outside_the_build(tmp_path: Path) -> None:
    build = a_build(tmp_path, ["index.json"])
    (build / "build.json").write_text(json.dumps({"artifacts": [{"path": "../../etc/passwd"}]}))
    proc = ci("sign", "--dry-run", env={"BUILD": str(build)})
    assert proc.returncode != 0 and "unsafe artifact path" in proc.stderr
    assert not (build / "sigstore/would-sign.txt").exists()


@pytest.fixture(scope="module")
def all_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys = tmp_path_factory.mktemp("keys") / "all"
    proc = subprocess.run(
        [str(REPO / ".venv/bin/distbuild"), "keys", "init", "--keys", str(keys)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return keys


def test_unpack_keys_takes_the_online_keys(tmp_path: Path, all_keys: Path) -> None:
    online = online_keys(all_keys, tmp_path / "online")
    proc = ci("unpack-keys", env={"TUF_KEYS": secret_of(online), "RUNNER_TEMP": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    unpacked = tmp_path / "keys"
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in online.iterdir())
    assert not any(p.name.startswith("root-") for p in unpacked.iterdir())
    assert oct(unpacked.stat().st_mode & 0o777) == "0o700"
    assert ci("forget-keys", env={"RUNNER_TEMP": str(tmp_path)}).returncode == 0
    assert not unpacked.exists()


def test_unpack_keys_refuses_root_keys_and_leaves_nothing(tmp_path: Path, all_keys: Path) -> None:
    proc = ci("unpack-keys", env={"TUF_KEYS": secret_of(all_keys), "RUNNER_TEMP": str(tmp_path)})
    refused(proc, "TUF_KEYS holds root keys")
    assert "export-online" in proc.stderr
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "the TUF_KEYS secret is empty"),
        ("bm90IGEgdGFyYmFsbA==", "TUF_KEYS is not a base64 tar.gz"),
    ],
)
def test_unpack_keys_refuses_an_empty_or_broken_secret(
    tmp_path: Path, secret: str, message: str
) -> None:
    proc = ci("unpack-keys", env={"TUF_KEYS": secret, "RUNNER_TEMP": str(tmp_path)})
    refused(proc, message)
    assert not (tmp_path / "keys").exists()


def test_publish_refuses_a_channel_the_branch_does_not_have(tmp_path: Path) -> None:
    build = a_build(tmp_path, ["index.json"])
    env = {"BUILD": str(build), "DISTBUILD_REPO": str(tmp_path / "published"),
           "DISTBUILD_KEYS": str(tmp_path / "keys")}  # fmt: skip
    proc = ci("publish", "beta", env=env)
    refused(proc, "channel beta does not exist on the channels branch")
    assert "distbuild channel init beta" in proc.stderr
    refused(ci("publish", "../x", env=env), "'../x' is not a channel name")


def test_build_arch_refuses_an_unknown_arch_and_missing_locks(tmp_path: Path) -> None:
    env = {"SOURCE_DATE_EPOCH": "1764201600", "IMAGE": "toolbox"}
    refused(ci("build-arch", "riscv64", env=env), "unknown arch 'riscv64'")
    if (REPO / "locks").exists():
        pytest.skip("this checkout has a locks/ directory of its own")
    proc = subprocess.run(
        [str(REPO / ".ci/build-arch"), "amd64"], cwd=tmp_path,
        env=host_env(**env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    refused(proc, "no locks for toolbox in locks/")
    refused(ci("build-arch", "amd64", env={"IMAGE": "../x"}), "IMAGE=../x is not an image name")


def test_merge_refuses_when_no_parts_were_downloaded(tmp_path: Path) -> None:
    if (REPO / "parts").exists():
        pytest.skip("this checkout has a parts/ directory of its own")
    refused(ci("merge", env={"IMAGE": "node"}), "no builds of node under parts/")
