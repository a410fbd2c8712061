"""The channel commands end to end: real builds, real processes, `distbuild serve`, ngclient."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel.serve import Server, Traffic
from distbuild.core.releases import INDEX_TARGET, ReleaseIndex
from tests.conftest import REPO
from tests.conftest import distbuild_process as distbuild
from tests.support.channel import client, make_build, tree


def start(*args: str | os.PathLike[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "distbuild.cli.main", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
    )


@pytest.fixture
def env(tmp_path: Path, project: Path) -> dict[str, str]:
    """Keys, repository and project through the environment, as CI would set them.

    One key directory with root keys creates the channels on first publish, so
    signing with it is allowed explicitly (CI exports the online keys instead:
    tests/unit/test_channel_keys.py).
    """
    values = {
        "DISTBUILD_KEYS": str(tmp_path / "keys"),
        "DISTBUILD_REPO": str(tmp_path / "repo"),
        "DISTBUILD_PROJECT": str(project),
        "DISTBUILD_ALLOW_ROOT_KEYS": "1",
    }
    done = distbuild("keys", "init", env=values)
    assert done.returncode == 0, done.stderr
    return values


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[Server]:
    """`distbuild serve` on a free port, as a separate process."""
    Path(env["DISTBUILD_REPO"]).mkdir(exist_ok=True)
    proc = start("serve", "--port", "0", env=env)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else url
    try:
        yield Server(url, Traffic(), None)  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.network
def test_real_build_reaches_a_fresh_client(
    tmp_path: Path, toolbox_all: Path, env: dict[str, str], served: Server
) -> None:
    done = distbuild("publish", toolbox_all, "--channel", "beta", "--json", env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads((toolbox_all / "build.json").read_text())
    files = {
        f"toolbox/1.0.0/{a['arch']}/{Path(a['path']).name}": a
        for a in record["artifacts"]
        if a["arch"] != "all" and a["kind"] not in ("oci", "oci-index")
    }
    assert {a["kind"] for a in files.values()} >= {"lock"}
    assert sorted(json.loads(done.stdout)["targets"]) == sorted(files)
    root = (Path(env["DISTBUILD_REPO"]) / "beta/metadata/root.json").read_bytes()
    updater = client(served, "beta", root, tmp_path / "client")
    info = updater.get_targetinfo(INDEX_TARGET)
    assert info is not None
    index = ReleaseIndex.from_json(
        Path(updater.download_target(info, str(tmp_path / "i"))).read_bytes()
    )
    for arch in ("armv7", "arm64", "amd64"):
        release = index.latest("toolbox", arch)
        assert release is not None and release.version == "1.0.0"
        for path in release.target_paths(arch):
            target = updater.get_targetinfo(path)
            assert target is not None and target.custom["kind"] == files[path]["kind"]
            data = Path(updater.download_target(target, str(tmp_path / "dl"))).read_bytes()
            assert hashlib.sha256(data).hexdigest() == files[path]["sha256"]
    lock = files["toolbox/1.0.0/arm64/packages.lock.json"]

    shown = distbuild("channel", "show", "beta", "--arch", "arm64", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    (latest,) = json.loads(shown.stdout)["latest"]
    assert latest["version"] == "1.0.0" and latest["arch"] == "arm64"
    assert {
        "path": "toolbox/1.0.0/arm64/packages.lock.json",
        "kind": "lock",
        "sha256": lock["sha256"],
        "length": lock["size"],
    } in latest["targets"]

    promoted = distbuild("promote", "beta", "stable", "--release", "1.0.0", env=env)
    assert promoted.returncode == 0, promoted.stderr
    stable = json.loads(distbuild("channel", "show", "stable", "--json", env=env).stdout)
    beta = json.loads(distbuild("channel", "show", "beta", "--json", env=env).stdout)
    assert [t["targets"] for t in stable["latest"]] == [t["targets"] for t in beta["latest"]]


def test_concurrent_publishes_lose_no_release(
    tmp_path: Path, env: dict[str, str], served: Server
) -> None:
    builds = [make_build(tmp_path / "b", "node", f"2.{i}") for i in range(4)]
    # round one races on creating the channel, round two on publishing into it
    for pair in (builds[:2], builds[2:]):
        procs = [start("publish", b, "--channel", "alpha", env=env) for b in pair]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
    root = (Path(env["DISTBUILD_REPO"]) / "alpha/metadata/root.json").read_bytes()
    updater = client(served, "alpha", root, tmp_path / "client")
    updater.refresh()
    info = updater.get_targetinfo(INDEX_TARGET)
    assert info is not None
    index = ReleaseIndex.from_json(
        Path(updater.download_target(info, str(tmp_path / "i"))).read_bytes()
    )
    assert sorted(r.version for r in index.of("node")) == ["2.0", "2.1", "2.2", "2.3"]
    for release in index.of("node"):
        for path in release.target_paths():
            assert updater.get_targetinfo(path) is not None, path
    timestamp = json.loads((tmp_path / "client/metadata/timestamp.json").read_text())
    assert timestamp["signed"]["version"] == 5  # created once, then four publishes


def _fails_cleanly(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode != 0
    assert re.search(rf"^error: .*{message}", done.stderr, re.M), done.stderr
    assert re.search(r"^hint: \S", done.stderr, re.M), done.stderr
    assert "Traceback" not in done.stderr


def test_bad_inputs_fail_cleanly_and_change_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    build = make_build(tmp_path / "b", "node", "1")
    assert distbuild("publish", build, "--channel", "beta", env=env).returncode == 0
    repo = Path(env["DISTBUILD_REPO"])
    before = tree(repo)

    _fails_cleanly(
        distbuild(
            "publish",
            make_build(tmp_path / "b", "node", "2"),
            "--channel",
            "beta",
            env={**env, "DISTBUILD_KEYS": str(tmp_path / "nokeys")},
        ),
        "no keys at",
    )
    _fails_cleanly(distbuild("publish", build, "--channel", "gamma", env=env), "unknown channel")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_cleanly(distbuild("publish", empty, "--channel", "beta", env=env), "no build record")
    _fails_cleanly(
        distbuild("promote", "beta", "stable", "--release", "9.9", env=env), "has no release 9.9"
    )
    assert tree(repo) == before
    assert not (repo / "stable").exists() and not (repo / "gamma").exists()


def test_keys_cli_thresholds_permissions_and_rotation(tmp_path: Path, project: Path) -> None:
    env = {
        "DISTBUILD_KEYS": str(tmp_path / "keys"),
        "DISTBUILD_REPO": str(tmp_path / "repo"),
        "DISTBUILD_PROJECT": str(project),
        "DISTBUILD_KEY_PASSPHRASE": "s3cret",
        "DISTBUILD_ALLOW_ROOT_KEYS": "1",
    }
    done = distbuild("keys", "init", "--threshold", "root=2", "--root-keys", "3", env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^root\s+2 of 3", done.stdout, re.M)
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "keys").iterdir()} == {0o600}
    build = make_build(tmp_path / "b", "node", "1")
    assert distbuild("publish", build, "--channel", "beta", env=env).returncode == 0
    assert distbuild("channel", "init", "stable", env=env).returncode == 0

    locked = {**env, "DISTBUILD_KEY_PASSPHRASE": ""}
    _fails_cleanly(distbuild("keys", "rotate-root", env=locked), "cannot unlock")

    done = distbuild("keys", "rotate-root", "--root-keys", "2", "--threshold", "root=2", env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:2]) == ["beta: root version 2", "stable: root version 2"]
    shown = json.loads(distbuild("channel", "show", "beta", "--json", env=env).stdout)
    assert shown["root_version"] == 2 and shown["latest"]
