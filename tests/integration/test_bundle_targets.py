"""CI's Sigstore bundles are published next to the targets they sign, and a subscriber
who fetched both through TUF (ngclient over HTTP) can verify them offline."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from distbuild.channel.publish import publish
from distbuild.channel.repo import ChannelRepo
from distbuild.channel.serve import serving
from distbuild.core.errors import DistbuildError
from tests.conftest import run_cli
from tests.support.channel import channel, client, make_build, make_keys
from tests.support.sigstore import BUNDLE, IDENTITY, ISSUER

pytestmark = pytest.mark.network


def build_with(out: Path, payload: Path, name: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """A one-arch build whose amd64 'root' artifact is ``payload``, stored as ``name``."""
    build = make_build(out, "node", "1.0.0", arches=("amd64",))
    record = json.loads((build / "build.json").read_text())
    [root] = [a for a in record["artifacts"] if a["kind"] == "root"]
    (build / root["path"]).unlink()
    root["path"] = f"amd64/{name}"
    shutil.copy(payload, build / root["path"])
    data = payload.read_bytes()
    root["sha256"], root["size"] = hashlib.sha256(data).hexdigest(), len(data)
    (build / "build.json").write_text(json.dumps(record))
    return build, root


def test_bundle_is_a_target_next_to_its_file(tmp_path: Path, signed_wheel: Path) -> None:
    wheel = signed_wheel
    build, root = build_with(tmp_path / "out", wheel, wheel.name)
    bundle = build / "sigstore" / (root["path"] + ".sigstore.json")
    bundle.parent.mkdir(parents=True)
    shutil.copy(BUNDLE, bundle)
    repo = tmp_path / "repo"
    keys = make_keys(tmp_path / "keys")
    outcome = publish(repo, channel("beta"), build, keys)
    name = f"node/1.0.0/amd64/{wheel.name}"
    assert f"{name}.sigstore.json" in outcome.targets

    got = tmp_path / "got"
    got.mkdir()
    with serving(repo) as server:
        root_json = (repo / "beta" / "metadata" / "1.root.json").read_bytes()
        updater = client(server, "beta", root_json, tmp_path / "client")
        updater.refresh()
        info = updater.get_targetinfo(f"{name}.sigstore.json")
        assert info is not None
        assert info.custom == {
            "image": "node",
            "version": "1.0.0",
            "arch": "amd64",
            "kind": "sigstore-bundle",
            "signs": wheel.name,
        }
        assert info.hashes["sha256"] == hashlib.sha256(BUNDLE.read_bytes()).hexdigest()
        fetched_bundle = Path(updater.download_target(info, str(got / "b.sigstore.json")))
        art = updater.get_targetinfo(name)
        assert art is not None
        fetched = Path(updater.download_target(art, str(got / wheel.name)))
    rc = run_cli(
        "verify", fetched, "--bundle", fetched_bundle, "--identity", IDENTITY, "--issuer", ISSUER
    )
    assert rc == 0


def test_bundle_of_another_file_is_refused_before_publishing(
    tmp_path: Path, signed_wheel: Path
) -> None:
    wheel = signed_wheel
    build, root = build_with(tmp_path / "out", wheel, "root.img")
    (build / root["path"]).write_bytes(b"other bytes")  # a rebuild, signed bundle left over
    record = json.loads((build / "build.json").read_text())
    for a in record["artifacts"]:
        if a["path"] == root["path"]:
            a["sha256"], a["size"] = hashlib.sha256(b"other bytes").hexdigest(), 11
    (build / "build.json").write_text(json.dumps(record))
    shutil.copy(BUNDLE, build / (root["path"] + ".sigstore.json"))  # sigstore's default name
    repo = tmp_path / "repo"
    with pytest.raises(DistbuildError) as e:
        publish(repo, channel("beta"), build, make_keys(tmp_path / "keys"))
    assert "signs sha256" in e.value.message and e.value.hint
    assert not ChannelRepo(repo, "beta").exists()  # nothing was published
