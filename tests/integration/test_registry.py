"""``distbuild push`` against a real docker-registry (distribution v2.8) on 127.0.0.1.

What is checked comes from outside distbuild: skopeo reads the registry, and
the registry's own storage shows what it holds. A fault-injecting proxy in
front of the registry drops connections and answers 5xx to show that pushes
survive a flaky registry and that a dead one leaves nothing dangling.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import read_record, run_cli
from tests.support.faultproxy import DROP, Fault, FaultProxy
from tests.support.registry import RegistryServer, make_build

DISTBUILD = Path(sys.executable).parent / "distbuild"
REPO = "distbuild/toolbox"
UPLOAD = r"/blobs/uploads/"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def skopeo(registry: RegistryServer, *args: str) -> bytes:
    argv = ["skopeo", *args]
    if args[0] == "inspect":
        argv += ["--creds", registry.creds(), "--tls-verify=false"]
    proc = subprocess.run(argv, check=False, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def registry_digest(registry: RegistryServer, ref: str) -> str:
    raw = skopeo(registry, "inspect", "--raw", f"docker://{registry.address}/{ref}")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def layout_digests(layout: Path, ref: str) -> dict[str, str]:
    """{"index": digest, <arch>: manifest digest} of an OCI layout's named index."""
    top = json.loads((layout / "index.json").read_text())
    desc = next(
        d
        for d in top["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
    )
    index = json.loads((layout / "blobs/sha256" / desc["digest"].split(":")[1]).read_bytes())
    out = {"index": desc["digest"]}
    for m in index["manifests"]:
        p = m["platform"]
        out[p["architecture"] + p.get("variant", "")] = m["digest"]
        manifest = json.loads((layout / "blobs/sha256" / m["digest"].split(":")[1]).read_bytes())
        for blob in [manifest["config"], *manifest["layers"]]:
            data = (layout / "blobs/sha256" / blob["digest"].split(":")[1]).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    return out


def build_digests(build: Path) -> dict[str, str]:
    record = read_record(build)
    return layout_digests(build / record["oci"]["layout"], record["oci"]["ref"])


def blob_bytes(build: Path) -> int:
    """Bytes of every config and layer blob the build's index names."""
    digests = build_digests(build)
    layout = build / read_record(build)["oci"]["layout"]
    total = 0
    for key, digest in digests.items():
        if key == "index":
            continue
        manifest = json.loads((layout / "blobs/sha256" / digest.split(":")[1]).read_bytes())
        total += sum(b["size"] for b in [manifest["config"], *manifest["layers"]])
    return total


def push(
    build: Path, ref: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``distbuild push --json`` in a subprocess, the way a user runs it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [DISTBUILD, "push", build, ref, "--json", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=600,
        check=False,
    )


def pushed_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


# -- the toolbox image, all three arches -------------------------------------------


@pytest.fixture(scope="module")
def first_push(registry: RegistryServer, toolbox_all: Path) -> dict[str, Any]:
    start = time.monotonic()
    result = pushed_json(
        push(toolbox_all, f"{registry.address}/{REPO}:1.0.0", "--tag", "latest", env=registry.env())
    )
    result["wall_seconds"] = time.monotonic() - start
    print(f"\nfirst push: {result}", file=sys.stderr)
    return result


@pytest.mark.slow
@pytest.mark.network
def test_push_all_arches(
    first_push: dict[str, Any],
    registry: RegistryServer,
    toolbox_all: Path,
) -> None:
    want = build_digests(toolbox_all)
    assert len(want) == 4  # the index and three per-arch manifests
    assert first_push["digest"] == want["index"]
    assert first_push["blobs_uploaded"] == 6  # a config and a layer per arch
    assert first_push["bytes_uploaded"] == blob_bytes(toolbox_all)
    assert first_push["manifests_uploaded"] == 4
    # skopeo, not distbuild, reads the registry: both tags name the build's index.
    assert registry_digest(registry, f"{REPO}:1.0.0") == want["index"]
    assert registry_digest(registry, f"{REPO}:latest") == want["index"]
    for key, digest in want.items():
        assert registry_digest(registry, f"{REPO}@{digest}") == digest, key
    assert registry.consistency_problems(REPO) == []


@pytest.mark.slow
@pytest.mark.network
def test_skopeo_copies_it_back_with_every_digest(
    first_push: dict[str, Any],
    registry: RegistryServer,
    toolbox_all: Path,
    tmp_path: Path,
) -> None:
    skopeo(
        registry,
        "copy",
        "--all",
        "--preserve-digests",
        "--src-creds",
        registry.creds(),
        "--src-tls-verify=false",
        f"docker://{registry.address}/{REPO}:1.0.0",
        f"oci:{tmp_path / 'back'}:1.0.0",
    )
    assert layout_digests(tmp_path / "back", "1.0.0") == build_digests(toolbox_all)


@pytest.mark.slow
@pytest.mark.network
def test_skopeo_oci_to_registry_to_oci_keeps_digests(
    registry: RegistryServer,
    toolbox_all: Path,
    tmp_path: Path,
) -> None:
    record = read_record(toolbox_all)
    layout = toolbox_all / record["oci"]["layout"]
    target = f"docker://{registry.address}/distbuild/toolbox-skopeo:1.0.0"
    creds = registry.creds()
    skopeo(registry, "copy", "--all", "--preserve-digests", "--dest-creds", creds,
           "--dest-tls-verify=false", f"oci:{layout}:1.0.0", target)  # fmt: skip
    skopeo(registry, "copy", "--all", "--preserve-digests", "--src-creds", creds,
           "--src-tls-verify=false", target, f"oci:{tmp_path / 'back'}:1.0.0")  # fmt: skip
    assert layout_digests(tmp_path / "back", "1.0.0") == build_digests(toolbox_all)


@pytest.mark.slow
@pytest.mark.network
def test_second_push_uploads_nothing(
    first_push: dict[str, Any],
    registry: RegistryServer,
    toolbox_all: Path,
) -> None:
    with FaultProxy(registry.address) as proxy:
        again = pushed_json(
            push(
                toolbox_all, f"{proxy.address}/{REPO}:1.0.0", "--tag", "latest", env=registry.env()
            )
        )
    print(f"\nsecond push: {again}", file=sys.stderr)
    assert again["digest"] == first_push["digest"]
    assert again["blobs_uploaded"] == 0 and again["bytes_uploaded"] == 0
    assert again["blobs_skipped"] == 6
    assert again["bytes_skipped"] == first_push["bytes_uploaded"]
    assert again["manifests_uploaded"] == 0 and again["tags_updated"] == []
    # What reached the registry: lookups only, not one write.
    assert [r for r in proxy.log if r.method in WRITES] == []
    found = {r.path for r in proxy.requests("HEAD", r"/blobs/sha256:") if r.status == 200}
    assert len(found) == 6
    assert sum(r.body for r in proxy.log) == 0


@pytest.mark.slow
@pytest.mark.network
def test_push_survives_dropped_connections_and_5xx(
    registry: RegistryServer,
    toolbox_all: Path,
    tmp_path: Path,
) -> None:
    repo = "distbuild/toolbox-flaky"
    faults = [
        Fault("PATCH", UPLOAD, DROP),  # reset halfway through a chunk
        Fault("PUT", UPLOAD, DROP, body=True),  # … and through a monolithic upload
        Fault("PUT", UPLOAD, 500, body=False),  # a chunked upload's closing PUT fails
        Fault("POST", UPLOAD, 500, times=2),
        Fault("HEAD", r"/blobs/sha256:", 503, times=2),
        Fault("PUT", r"/manifests/sha256:", 503),
        Fault("PUT", r"/manifests/1\.0\.0$", 502),
    ]
    with FaultProxy(registry.address, faults) as proxy:
        result = pushed_json(push(toolbox_all, f"{proxy.address}/{repo}:1.0.0", env=registry.env()))
    # Every fault happened, and the push went on past each.
    assert [f.fired for f in faults] == [1, 1, 1, 2, 2, 1, 1]
    assert result["retries"] >= 9
    assert result["bytes_sent"] > result["bytes_uploaded"]  # the dropped uploads were redone
    # Big layers went in chunks, configs in one request.
    assert proxy.requests("PATCH", UPLOAD)
    assert [r for r in proxy.requests("PUT", UPLOAD) if r.body > 0]
    want = build_digests(toolbox_all)
    assert result["digest"] == want["index"]
    assert registry_digest(registry, f"{repo}:1.0.0") == want["index"]
    skopeo(registry, "copy", "--all", "--preserve-digests", "--src-creds", registry.creds(),
           "--src-tls-verify=false", f"docker://{registry.address}/{repo}:1.0.0",
           f"oci:{tmp_path / 'back'}:1.0.0")  # fmt: skip
    assert layout_digests(tmp_path / "back", "1.0.0") == want
    assert registry.consistency_problems(repo) == []


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize(
    ("case", "fault"),
    [
        ("blobs", Fault("POST", UPLOAD, 503, times=None, after=1)),
        ("manifests", Fault("PUT", r"/manifests/", 503, times=None, after=1)),
    ],
)
def test_registry_that_keeps_failing(
    case: str,
    fault: Fault,
    registry: RegistryServer,
    toolbox_all: Path,
) -> None:
    repo = f"distbuild/toolbox-failing-{case}"
    with FaultProxy(registry.address, [fault]) as proxy:
        proc = push(toolbox_all, f"{proxy.address}/{repo}:1.0.0", "--retries", "2",
                    env=registry.env())  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "503" in proc.stderr and "3 times" in proc.stderr
    assert "hint: the registry keeps failing" in proc.stderr
    assert proc.stdout == ""
    assert fault.fired == 3  # one try and two retries
    # The push got partway, yet nothing in the registry points at anything missing.
    assert registry.blobs(repo)
    assert registry.consistency_problems(repo) == []
    assert registry.tags(repo) == {}
    if case == "blobs":
        assert registry.manifests(repo) == []
    else:  # armv7 (first in the index) got in, arm64's manifest did not
        assert registry.manifests(repo) == [build_digests(toolbox_all)["armv7"]]


# -- authentication and references, on a small build of our own ----------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_build(tmp_path / "out")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DISTBUILD_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("DISTBUILD_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def test_wrong_password_is_an_authentication_error(
    registry: RegistryServer,
    tiny: Path,
    no_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DISTBUILD_REGISTRY_USERNAME", registry.username)
    monkeypatch.setenv("DISTBUILD_REGISTRY_PASSWORD", "not-" + registry.password)
    rc = run_cli("push", tiny, f"{registry.address}/distbuild/tiny:1.0.0")
    err = capsys.readouterr().err
    assert rc == 7
    assert f"error: authentication failed for {registry.address}" in err
    assert "hint: check the credentials" in err and "DISTBUILD_REGISTRY_PASSWORD" in err
    assert registry.manifests("distbuild/tiny") == []


def test_wrong_password_exits_without_traceback(
    registry: RegistryServer,
    tiny: Path,
) -> None:
    env = {**registry.env(), "DISTBUILD_REGISTRY_PASSWORD": "wrong"}
    proc = push(tiny, f"{registry.address}/distbuild/tiny:1.0.0", env=env)
    assert proc.returncode == 7
    assert "error: authentication failed" in proc.stderr and "Traceback" not in proc.stderr


def test_no_credentials_asks_for_them(
    registry: RegistryServer,
    tiny: Path,
    no_credentials: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = run_cli("push", tiny, f"{registry.address}/distbuild/tiny:1.0.0")
    err = capsys.readouterr().err
    assert rc == 7
    assert f"error: {registry.address} requires authentication" in err
    assert "hint: set DISTBUILD_REGISTRY_USERNAME" in err


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("not a ref!!", "invalid image reference 'not a ref!!'"),
        ("distbuild/toolbox:1.0.0", "image reference 'distbuild/toolbox:1.0.0' names no registry"),
        ("127.0.0.1:5000/Distbuild/Toolbox", "invalid image reference"),
    ],
)
def test_bad_reference(
    ref: str, message: str, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_cli("push", tiny, ref)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {message}" in err
    assert "hint: write it as HOST[:PORT]/REPOSITORY[:TAG]" in err


def test_credentials_from_docker_config(
    registry: RegistryServer,
    tiny: Path,
    tmp_path: Path,
    no_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(registry.creds().encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {f"http://{registry.address}/v1/": {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    rc = run_cli("push", tiny, f"{registry.address}/distbuild/tiny-config", "--json")
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out)["tags"] == ["1.0.0"]  # no tag in the reference: the version
    assert registry_digest(registry, "distbuild/tiny-config:1.0.0") == build_digests(tiny)["index"]


def test_credentials_from_a_docker_credential_helper(
    registry: RegistryServer,
    tiny: Path,
    tmp_path: Path,
    no_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-distbuildtest"
    answer = json.dumps({"Username": registry.username, "Secret": registry.password})
    helper.write_text(
        f'#!/bin/sh\n[ "$1" = get ] && [ "$(cat)" = "{registry.address}" ] || exit 1\n'
        f"echo '{answer}'\n"
    )
    helper.chmod(0o755)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "distbuildtest"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert run_cli("push", tiny, f"{registry.address}/distbuild/tiny-helper:1.0.0") == 0
    assert registry.manifests("distbuild/tiny-helper")


def test_bearer_token_auth(
    registry: RegistryServer,
    tiny: Path,
    no_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token_registry = registry.spawn(auth="token")
    assert token_registry.token_server is not None
    ref = f"{token_registry.address}/distbuild/tiny:1.0.0"
    for k, v in token_registry.env().items():
        monkeypatch.setenv(k, v)
    # --chunk-size: a layer bigger than a chunk goes up in PATCHes under the token too.
    big = make_build(tiny.parent.parent / "big", "big", payload=os.urandom(300_000))
    assert run_cli("push", big, ref, "--chunk-size", "64K", "--json") == 0
    assert json.loads(capsys.readouterr().out)["blobs_uploaded"] == 2
    assert "repository:distbuild/tiny:pull,push" in token_registry.token_server.issued
    assert registry_digest(token_registry, "distbuild/tiny:1.0.0") == build_digests(big)["index"]

    monkeypatch.setenv("DISTBUILD_REGISTRY_PASSWORD", "wrong")
    assert run_cli("push", tiny, ref) == 7
    assert f"error: authentication failed for {token_registry.address}" in capsys.readouterr().err
    assert token_registry.token_server.refused >= 1


def test_unreachable_registry(
    tiny: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        rc = run_cli("push", tiny, f"127.0.0.1:{port}/distbuild/tiny:1.0.0", "--retries", "1")
    err = capsys.readouterr().err
    assert rc == 7
    assert f"error: cannot reach 127.0.0.1:{port}" in err and "failed 2 times" in err
    assert f"hint: check that a registry answers at http://127.0.0.1:{port}" in err


def test_https_to_a_plain_http_registry(
    registry: RegistryServer,
    tiny: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = run_cli("push", tiny, f"{registry.address}/distbuild/tiny:1.0.0", "--https")
    err = capsys.readouterr().err
    assert rc == 7
    assert f"error: TLS with {registry.address} failed" in err
    assert "hint: use --plain-http" in err
