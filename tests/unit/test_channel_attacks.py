"""A channel is written so that ngclient refuses tampering before using any byte.

Each test publishes a real channel, changes what the HTTP server hands out
the way an attacker (or a broken mirror) would, and checks that python-tuf's
ngclient refuses it with the specific error, leaving no target file behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import Metadata, MetaFile
from tuf.api.serialization.json import JSONSerializer

from distbuild.channel import repo as repo_module
from distbuild.channel.keys import KeyStore
from distbuild.channel.pipeline import release_pipeline
from distbuild.channel.publish import publish
from distbuild.channel.repo import ChannelRepo, Update, utcnow
from distbuild.channel.serve import Server, serving
from distbuild.channel.tufapi import CryptoSigner, Signer
from distbuild.core.errors import DistbuildError
from tests.support.channel import EXPIRY, channel, client, make_build, make_keys, tree

BETA = channel("beta")
TARGET = "node/1/amd64/root.img"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def server(repo: Path) -> Iterator[Server]:
    with serving(repo) as s:
        yield s


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    # two targets keys, both needed: lets the tests sign below threshold
    return make_keys(tmp_path / "keys", targets=2, targets_threshold=2)


@pytest.fixture
def published(tmp_path: Path, repo: Path, keys: KeyStore) -> Path:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    return repo / "beta"


def fresh(server: Server, repo: Path, tmp_path: Path, name: str = "client") -> object:
    return client(
        server, "beta", (repo / "beta/metadata/1.root.json").read_bytes(), tmp_path / name
    )


def target_file(channel_dir: Path, path: str) -> Path:
    directory, _, base = path.rpartition("/")
    (found,) = (channel_dir / "targets" / directory).glob(f"*.{base}")
    return found


def test_tampered_target_is_refused(
    tmp_path: Path, repo: Path, published: Path, server: Server
) -> None:
    victim = target_file(published, TARGET)
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    updater = fresh(server, repo, tmp_path)
    info = updater.get_targetinfo(TARGET)  # type: ignore[attr-defined]
    dest = tmp_path / "root.img"
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        updater.download_target(info, str(dest))  # type: ignore[attr-defined]
    assert not dest.exists()


def test_target_longer_than_declared_is_cut_off(
    tmp_path: Path, repo: Path, published: Path, server: Server
) -> None:
    victim = target_file(published, TARGET)
    victim.write_bytes(victim.read_bytes() + b"and a payload nobody signed")
    updater = fresh(server, repo, tmp_path)
    info = updater.get_targetinfo(TARGET)  # type: ignore[attr-defined]
    dest = tmp_path / "root.img"
    with pytest.raises(exceptions.DownloadLengthMismatchError):
        updater.download_target(info, str(dest))  # type: ignore[attr-defined]
    assert not dest.exists()


def test_expired_timestamp_is_refused(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    past = utcnow() - timedelta(days=2)  # timestamp lives 1 day: expired yesterday
    publish(
        repo,
        BETA,
        make_build(tmp_path / "b", "node", "1"),
        keys,
        now=past,
        pipeline=release_pipeline(BETA).targets_only(),
    )
    with pytest.raises(exceptions.ExpiredMetadataError, match="timestamp"):
        fresh(server, repo, tmp_path).refresh()  # type: ignore[attr-defined]


def test_timestamp_rollback_is_refused(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, server: Server
) -> None:
    old = (published / "metadata/timestamp.json").read_bytes()
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), keys)
    fresh(server, repo, tmp_path).refresh()  # type: ignore[attr-defined]
    (published / "metadata/timestamp.json").write_bytes(old)  # replay the older timestamp
    again = fresh(server, repo, tmp_path)  # same cache: it trusts the newer one
    with pytest.raises(exceptions.BadVersionNumberError, match="timestamp"):
        again.refresh()  # type: ignore[attr-defined]


def test_snapshot_rollback_is_refused(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, server: Server
) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), keys)
    fresh(server, repo, tmp_path).refresh()  # type: ignore[attr-defined]
    # With the timestamp key (online, the likeliest to leak) an attacker signs a
    # newer timestamp that points back at the previous snapshot.
    meta = published / "metadata"
    ts = Metadata.from_bytes((meta / "timestamp.json").read_bytes())
    previous = ts.signed.snapshot_meta.version - 1
    data = (meta / f"{previous}.snapshot.json").read_bytes()
    ts.signed.version += 1
    ts.signed.snapshot_meta = MetaFile.from_data(previous, data, ["sha256"])
    for signer in keys.signers("timestamp"):
        ts.sign(signer)
    (meta / "timestamp.json").write_bytes(ts.to_bytes(JSONSerializer()))
    with pytest.raises(exceptions.BadVersionNumberError, match="snapshot"):
        fresh(server, repo, tmp_path).refresh()  # type: ignore[attr-defined]


def test_mix_and_match_is_refused(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, server: Server
) -> None:
    # Two publishes from the same state: both make snapshot and bins of equal versions.
    shutil.copytree(published, repo / "other")
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), keys)
    publish(repo, channel("other"), make_build(tmp_path / "b", "node", "3"), keys)
    meta, other = published / "metadata", repo / "other" / "metadata"
    update = Update(ChannelRepo(repo, "beta"), keys, EXPIRY)
    version = update.timestamp.signed.snapshot_meta.version
    assert (other / f"{version}.snapshot.json").is_file()

    saved = (meta / f"{version}.snapshot.json").read_bytes()
    shutil.copy(other / f"{version}.snapshot.json", meta / f"{version}.snapshot.json")
    with pytest.raises(
        (exceptions.LengthOrHashMismatchError, exceptions.DownloadLengthMismatchError)
    ):
        fresh(server, repo, tmp_path, "c1").refresh()  # type: ignore[attr-defined]

    (meta / f"{version}.snapshot.json").write_bytes(saved)
    role = update.role_of("releases.json")
    bin_version = update.snapshot.signed.meta[f"{role}.json"].version
    shutil.copy(other / f"{bin_version}.{role}.json", meta / f"{bin_version}.{role}.json")
    updater = fresh(server, repo, tmp_path, "c2")
    updater.refresh()  # type: ignore[attr-defined]
    with pytest.raises(
        (exceptions.LengthOrHashMismatchError, exceptions.DownloadLengthMismatchError)
    ):
        updater.get_targetinfo("releases.json")  # type: ignore[attr-defined]


class _Forger:
    """Signs snapshot and timestamp with the real (online) keys, targets as told."""

    def __init__(self, keys: KeyStore, targets: list[Signer]) -> None:
        self.keys = keys
        self.targets = targets

    def signers(self, role: str) -> list[Signer]:
        return self.targets if role == "targets" else self.keys.signers(role)


@pytest.mark.parametrize("who", ["below-threshold", "wrong-key"])
def test_targets_not_signed_by_threshold_are_refused(
    tmp_path: Path,
    repo: Path,
    keys: KeyStore,
    published: Path,
    server: Server,
    who: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signers = (
        keys.signers("targets")[:1]
        if who == "below-threshold"
        else [CryptoSigner.generate_ed25519()]
    )
    evil = "node/1/amd64/evil.img"
    custom = {"image": "node", "version": "1", "arch": "amd64", "kind": "root"}
    # distbuild's own writer checks the staged state as a client and changes nothing ...
    before = tree(repo)
    with (
        pytest.raises(DistbuildError, match="fails verification as a client"),
        Update(ChannelRepo(repo, "beta"), _Forger(keys, signers), EXPIRY) as update,
    ):
        update.add_bytes(evil, b"rootkit", custom)
        update.commit()
    assert tree(repo) == before
    # ... so the forger is an attacker's writer without that check.
    monkeypatch.setattr(repo_module, "verify_as_client", lambda *a, **k: None)
    with Update(ChannelRepo(repo, "beta"), _Forger(keys, signers), EXPIRY) as update:
        update.add_bytes(evil, b"rootkit", custom)
        update.commit()
    updater = fresh(server, repo, tmp_path)
    updater.refresh()  # type: ignore[attr-defined]  # timestamp and snapshot are genuine
    with pytest.raises(exceptions.UnsignedMetadataError):
        updater.get_targetinfo(evil)  # type: ignore[attr-defined]
    assert not (tmp_path / "client" / "targets").exists()
