"""The release workflow, run here as GitHub would (its run steps, read from release.yml,
in order, in fresh clones): a local bare repository stands in for the ``channels``
branch, a local registry for the optional push, and signing runs ``--dry-run`` (no
OIDC here; ``.ci/verify`` runs against the stored real bundle in test_ci_verify.py).
The image is the small toolbox (the workflow's IMAGE, overridden) to keep two runs
short. The channel it publishes verifies with an independent python-tuf client from
its first root, and the next tag adds a release without losing the first."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distbuild.channel.serve import serving
from distbuild.core.releases import INDEX_TARGET, ReleaseIndex
from tests.support.channel import client
from tests.support.ci import (
    REPO,
    Runner,
    git,
    github_context,
    host_env,
    load,
    online_keys,
    scripts_in_order,
    secret_of,
)
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.network]

IMAGE = "toolbox"
CHANNEL = "beta"
NAMESPACE = "releases"


def distbuild(*args: str | Path, cwd: Path = REPO) -> str:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/distbuild"), *map(str, args)],
        cwd=cwd, env=host_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("release-keys")
    distbuild("keys", "init", "--keys", base / "all")
    return {"all": base / "all", "online": online_keys(base / "all", base / "online")}


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Path:
    """The bare repository whose ``channels`` branch holds the channel, created
    once offline with the root keys (README "Releasing")."""
    base = tmp_path_factory.mktemp("channels")
    bare, work = base / "origin.git", base / "work"
    git("init", "-q", "--bare", bare)
    git("init", "-q", "-b", "channels", work)
    distbuild("channel", "init", CHANNEL, "--repo", work, "--keys", keys["all"])
    ident = ("-c", "user.name=t", "-c", "user.email=t@localhost")
    git("-C", work, "add", "-A")
    git("-C", work, *ident, "commit", "-q", "-m", "create the beta channel")
    git("-C", work, "push", "-q", bare, "channels")
    return bare


def release(
    tmp_path: Path, tag: str, channels: Path, keys: dict[str, Path], registry: RegistryServer
) -> Runner:
    workflow = load("release.yml")
    commit = git("-C", REPO, "rev-parse", "HEAD")
    ref = f"refs/tags/{tag}"
    runner = Runner(
        workflow,
        tmp_path / tag,
        source=str(REPO),
        commit=commit,
        context={
            "github": github_context(commit, ref, "release.yml"),
            "inputs": {},
            "secrets": {
                "TUF_KEYS": secret_of(keys["online"]),
                "REGISTRY_USERNAME": registry.username,
                "REGISTRY_PASSWORD": registry.password,
            },
            "vars": {"REGISTRY_REPOSITORY": f"{registry.address}/{NAMESPACE}"},
        },
        refs={"channels": str(channels)},
        env={"IMAGE": IMAGE},
        host_env=host_env(),
        skip=frozenset({".ci/setup", ".ci/verify"}),
        extra_args={".ci/sign": ["--dry-run"]},
        venv=REPO / ".venv",
    )
    runner.run_job("lock")
    for arch in workflow["jobs"]["image"]["strategy"]["matrix"]["arch"]:
        runner.run_job("image", {"arch": arch})
    runner.run_job("release")
    expected = scripts_in_order(workflow, [("lock", 1), ("image", 3), ("release", 1)])
    assert [c.removeprefix("skipped ") for c in runner.log] == [
        c + " --dry-run" if c == ".ci/sign" else c for c in expected
    ]
    return runner


def published(channels: Path, dest: Path) -> Path:
    git("clone", "-q", "--branch", "channels", channels, dest)
    return dest


def targets_of(record: dict[str, Any]) -> dict[str, str]:
    """The channel targets a build's published files become, and their kinds."""
    return {
        f"{IMAGE}/{record['version']}/{a['arch']}/{Path(a['path']).name}": a["kind"]
        for a in record["artifacts"]
        if a["arch"] != "all" and a["kind"] not in ("oci", "oci-index")
    }


def subscriber_view(repo: Path, workdir: Path, names: list[str]) -> dict[str, Any]:
    """What a python-tuf ngclient trusting the channel's FIRST root sees: the
    release index, and each named target's kind and bytes (None: not a target)."""
    first_root = (repo / CHANNEL / "metadata" / "1.root.json").read_bytes()
    workdir.mkdir()
    seen: dict[str, tuple[str, bytes] | None] = {}
    with serving(repo) as server:
        updater = client(server, CHANNEL, first_root, workdir)
        updater.refresh()
        info = updater.get_targetinfo(INDEX_TARGET)
        assert info is not None
        index = ReleaseIndex.from_json(
            Path(updater.download_target(info, str(workdir / "index"))).read_bytes()
        )
        for i, name in enumerate(names):
            info = updater.get_targetinfo(name)
            if info is None:
                seen[name] = None
                continue
            got = Path(updater.download_target(info, str(workdir / f"t{i}"))).read_bytes()
            seen[name] = (str(info.custom.get("kind")), got)
    return {"index": index, "targets": seen}


def build_of(tmp_path: Path, tag: str) -> tuple[Path, dict[str, Any]]:
    build = tmp_path / tag / "jobs" / "release" / "ws" / "out" / IMAGE / tag.removeprefix("v")
    return build, json.loads((build / "build.json").read_text())


def test_two_tagged_releases_publish_into_the_channel_branch(
    tmp_path: Path, channels: Path, keys: dict[str, Path], registry: RegistryServer
) -> None:
    first = release(tmp_path, "v1.0.0", channels, keys, registry)
    build, record = build_of(tmp_path, "v1.0.0")
    # Dry run: what would be signed is listed, and no signature exists.
    listed = (build / "sigstore/would-sign.txt").read_text().split()
    assert listed == sorted({a["path"] for a in record["artifacts"]})
    assert not list(build.rglob("*.sigstore.json"))
    assert not (tmp_path / "v1.0.0" / "jobs" / "release" / "tmp" / "keys").exists()

    files = targets_of(record)
    names = [*files, *(f"{n}.sigstore.json" for n in files)]
    view = subscriber_view(published(channels, tmp_path / "pub1"), tmp_path / "client1", names)
    for name, kind in files.items():
        assert view["targets"][name] is not None and view["targets"][name][0] == kind, name
        assert view["targets"][f"{name}.sigstore.json"] is None  # a dry run publishes none
    for arch in ("armv7", "arm64", "amd64"):
        assert view["index"].latest(IMAGE, arch).version == "1.0.0"
        # The locks the release was built from are published targets, byte for byte.
        shipped = view["targets"][f"{IMAGE}/1.0.0/{arch}/packages.lock.json"][1]
        assert shipped == (first.artifacts / "locks" / f"{IMAGE}.{arch}.lock.json").read_bytes()
    # The optional push: the registry's channel tag is this build's index.
    tag = subprocess.run(
        ["skopeo", "inspect", "--raw", "--creds", registry.creds(), "--tls-verify=false",
         f"docker://{registry.address}/{NAMESPACE}/{IMAGE}:{CHANNEL}"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert tag.returncode == 0, tag.stderr.decode()
    assert "sha256:" + hashlib.sha256(tag.stdout).hexdigest() == record["oci"]["index"]

    # The next tag: a second release, the first kept, all from the first root.
    release(tmp_path, "v1.0.1", channels, keys, registry)
    _, second = build_of(tmp_path, "v1.0.1")
    both = [*files, *targets_of(second)]
    view = subscriber_view(published(channels, tmp_path / "pub2"), tmp_path / "client2", both)
    assert all(view["targets"][n] is not None for n in both)
    assert [r.version for r in view["index"].of(IMAGE)][:2] == ["1.0.1", "1.0.0"]
    log = git("--git-dir", str(channels), "log", "--format=%s", "channels")
    assert log.splitlines() == [
        f"publish {IMAGE} v1.0.1 into {CHANNEL}",
        f"publish {IMAGE} v1.0.0 into {CHANNEL}",
        "create the beta channel",
    ]
