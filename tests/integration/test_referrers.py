"""The registry side of publish and promote, against a real docker-registry 2.8 on
127.0.0.1 (no referrers API, so the ``sha256-<hex>`` fallback tag is used).

The same build is released twice: by the CLI, with the registry from
``DISTBUILD_REGISTRY``, and by ``publish()``/``promote()`` called from Python,
with the registry from the channel's yaml; both must leave the same tags,
referrers and page."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import load_channel
from distbuild.channel.page import PAGE, collect
from distbuild.channel.publish import promote, publish
from distbuild.channel.repo import ChannelRepo
from distbuild.core.arch import ARCHES
from distbuild.oci.release import release_build
from tests.conftest import read_record, run_cli
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.network]

NAMESPACE = "channels"
LIBRARY_NAMESPACE = "library-channels"  # where the channels' yaml sends publish()
IMAGE = "toolbox"
SPDX = "application/spdx+json"


def skopeo_raw(registry: RegistryServer, ref: str, namespace: str = NAMESPACE) -> bytes:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--creds", registry.creds(), "--tls-verify=false",
         f"docker://{registry.address}/{namespace}/{IMAGE}{ref}"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def digest_of(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def released(
    toolbox_all: Path,
    registry: RegistryServer,
    project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The toolbox build, signed (see below), published to beta, promoted to stable."""
    base = tmp_path_factory.mktemp("referrers")
    build = base / "build"
    shutil.copytree(toolbox_all, build)
    record = read_record(build)
    [index] = [a for a in record["artifacts"] if a["kind"] == "oci-index"]
    # CI would sign the index keylessly; the registry side only carries the
    # bundle ('distbuild verify' is what checks signatures, in test_verify.py),
    # so any JSON blob of the bundle's shape, naming this index's digest, will do.
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.2+json",
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(bytes.fromhex(index["sha256"])).decode(),
            },
            "signature": base64.b64encode(b"not a signature: never verified here").decode(),
        },
    }
    bundle_path = build / "sigstore" / (index["path"] + ".sigstore.json")
    bundle_path.parent.mkdir(parents=True)
    bundle_path.write_text(json.dumps(bundle))

    env = {**registry.env(), "DISTBUILD_REGISTRY": f"{registry.address}/{NAMESPACE}"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        keys, repo = base / "keys", base / "repo"
        assert run_cli("keys", "init", "--keys", keys) == 0
        common = ("--repo", repo, "--keys", keys, "--allow-root-keys")
        assert run_cli("--project", project, "publish", build, "--channel", "beta", *common) == 0
        beta = skopeo_raw(registry, ":beta")
        assert (
            run_cli(
                "--project",
                project,
                "promote",
                "beta",
                "stable",
                "--release",
                record["version"],
                *common,
            )
            == 0
        )
        stable = skopeo_raw(registry, ":stable")
        # The same build again: nothing may be listed twice.
        release_build(build, f"{registry.address}/{NAMESPACE}", "beta")
        library = release_from_python(base, project, build, record["version"], registry)
    finally:
        mp.undo()
    return {"build": build, "record": record, "bundle": bundle_path, "beta": beta,
            "stable": stable, "cli_repo": repo, "library_repo": library}  # fmt: skip


def release_from_python(
    base: Path, project: Path, build: Path, version: str, registry: RegistryServer
) -> Path:
    """publish() and promote() as a library caller uses them; the registry is in the yaml.

    DISTBUILD_REGISTRY is still set (to the CLI's namespace): the library must not read it.
    """
    channels = base / "library-project" / "channels"
    shutil.copytree(project / "channels", channels)
    for name in ("beta", "stable"):
        with (channels / f"{name}.yaml").open("a") as f:
            f.write(f"registry: {registry.address}/{LIBRARY_NAMESPACE}\n")
    beta, stable = (load_channel(channels.parent, name) for name in ("beta", "stable"))
    keys = KeyStore.load(base / "keys", allow_root_keys=True)
    repo = base / "library-repo"
    publish(repo, beta, build, keys)
    promote(repo, beta, stable, version, keys)
    return repo


def referrers(registry: RegistryServer, subject: str, namespace: str) -> dict[str, str]:
    """The fallback tag's listing: artifact type and arch → the attached blob's digest."""
    listing = json.loads(skopeo_raw(registry, ":" + subject.replace(":", "-"), namespace))
    assert listing["mediaType"] == "application/vnd.oci.image.index.v1+json"
    found: dict[str, str] = {}
    for desc in listing["manifests"]:
        raw = skopeo_raw(registry, "@" + desc["digest"], namespace)
        assert digest_of(raw) == desc["digest"]
        manifest = json.loads(raw)
        assert manifest["subject"]["digest"] == subject
        assert manifest["artifactType"] == desc["artifactType"]
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        [layer] = manifest["layers"]
        key = desc["artifactType"] + " " + desc.get("annotations", {}).get("dev.distbuild.arch", "")
        assert key not in found, f"{key} listed twice"
        found[key] = layer["digest"]
    return found


def test_channel_tag_is_the_index_and_skopeo_sees_a_clean_index(
    released: dict[str, Any], registry: RegistryServer
) -> None:
    record = released["record"]
    assert digest_of(released["beta"]) == record["oci"]["index"]
    index = json.loads(released["beta"])
    platforms = [m.get("platform", {}) for m in index["manifests"]]
    want = [a.platform.as_oci() for a in ARCHES.values()]
    assert sorted(map(json.dumps, platforms)) == sorted(map(json.dumps, want))
    assert all(p.get("os") != "unknown" and p.get("architecture") != "unknown" for p in platforms)
    assert "subject" not in index and "artifactType" not in index
    # skopeo resolves the index to the host's manifest as usual.
    proc = subprocess.run(
        ["skopeo", "inspect", "--creds", registry.creds(), "--tls-verify=false",
         f"docker://{registry.address}/{NAMESPACE}/{IMAGE}:beta"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Digest"] == record["oci"]["index"]
    assert registry.consistency_problems(f"{NAMESPACE}/{IMAGE}") == []


def test_fallback_tag_lists_exactly_the_sboms_and_the_signature(
    released: dict[str, Any], registry: RegistryServer
) -> None:
    record, build = released["record"], released["build"]
    subject = record["oci"]["index"]
    # docker-registry 2.8 has no referrers API: that is why the fallback tag exists.
    r = requests.get(
        f"{registry.url}/v2/{NAMESPACE}/{IMAGE}/referrers/{subject}",
        auth=(registry.username, registry.password),
        timeout=30,
    )
    assert r.status_code == 404
    found = referrers(registry, subject, NAMESPACE)
    sboms = {a["arch"]: a for a in record["artifacts"] if a["kind"] == "sbom"}
    want = {f"{SPDX} {arch}": "sha256:" + a["sha256"] for arch, a in sboms.items()}
    bundle = released["bundle"].read_bytes()
    want["application/vnd.dev.sigstore.bundle.v0.2+json "] = digest_of(bundle)
    assert found == want
    assert set(sboms) == set(ARCHES)
    # The attached SBOM's bytes are the build's.
    arch = "amd64"
    assert (build / sboms[arch]["path"]).read_bytes()  # present
    blob = requests.get(
        f"{registry.url}/v2/{NAMESPACE}/{IMAGE}/blobs/{want[f'{SPDX} {arch}']}",
        auth=(registry.username, registry.password),
        timeout=30,
    )
    assert blob.status_code == 200
    assert blob.content == (build / sboms[arch]["path"]).read_bytes()


def test_promote_points_stable_at_the_same_index(released: dict[str, Any]) -> None:
    assert digest_of(released["stable"]) == digest_of(released["beta"])
    assert digest_of(released["stable"]) == released["record"]["oci"]["index"]


def test_library_publish_with_the_yaml_registry_does_what_the_cli_does(
    released: dict[str, Any], registry: RegistryServer
) -> None:
    subject = released["record"]["oci"]["index"]
    # Tags: the channels' tags in the yaml's namespace name the very index the CLI tagged.
    for tag in ("beta", "stable"):
        raw = skopeo_raw(registry, f":{tag}", LIBRARY_NAMESPACE)
        assert digest_of(raw) == digest_of(released[tag]) == subject
    # Referrers: the same SBOMs and signature, byte for byte.
    assert referrers(registry, subject, LIBRARY_NAMESPACE) == referrers(
        registry, subject, NAMESPACE
    )
    # Pages: written for both channels, listing the same files.
    for name in ("beta", "stable"):
        pages = [
            collect(ChannelRepo(released[repo], name)) for repo in ("cli_repo", "library_repo")
        ]
        for repo in ("cli_repo", "library_repo"):
            assert (released[repo] / name / PAGE).is_file()
        rows = [
            [
                (a.arch, [(r.version, r.files) for r in a.releases])
                for i in p.images
                for a in i.arches
            ]
            for p in pages
        ]
        assert rows[0] and rows[0] == rows[1]
