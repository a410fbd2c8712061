"""Channel definitions, the release index and waves, the key directory."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import load_channel, parse_duration
from distbuild.core.errors import DistbuildError, RecipeError, UsageError
from distbuild.core.releases import (
    MAX_SEED,
    Release,
    ReleaseIndex,
    Wave,
    seed_from,
    version_key,
)
from tests.conftest import REPO


def test_shipped_channels_load() -> None:
    stable = load_channel(REPO, "stable")
    assert stable.expiry.timestamp == timedelta(days=1)
    assert stable.expiry.snapshot == stable.expiry.targets == timedelta(days=7)
    assert stable.expiry.root == timedelta(days=365)
    assert stable.registry_tag == "stable"
    assert stable.waves[0] == Wave(0, 5 * MAX_SEED // 100)
    assert stable.waves[-1] == Wave(3 * 86400, MAX_SEED)
    assert load_channel(REPO, "beta").keep == 10
    assert load_channel(REPO, "alpha").waves == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30m", 1800), ("12h", 43200), ("1d12h", 129600), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_bad_duration() -> None:
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")


def _project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "edge.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("keep: 3\nexpires:\n  timestamp: soon\n", 3, "expires.timestamp"),
        ("keep: 3\nwaves:\n  - {after: 1h}\n", 3, "waves[0]"),
        ("waves:\n  - {after: 1h, percent: 50}\n  - {after: 2h, percent: 40}\n", 3, "waves[1]"),
        ("keep: 3\ncolour: blue\n", 2, "colour"),
        ("keep: -1\n", 1, "keep"),
        ("keep: 3\nregistry: no registry\n", 2, "registry"),
        ("registry: 127.0.0.1:99999/ns\n", 1, "registry"),
        ("registry_tag: -beta\n", 1, "registry_tag"),
    ],
)
def test_channel_errors_point_at_line(tmp_path: Path, text: str, line: int, key: str) -> None:
    project = _project(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_channel(project, "edge")
    assert f"edge.yaml:{line}: {key}:" in str(e.value)


def test_registry_comes_from_the_channel_yaml(tmp_path: Path) -> None:
    project = _project(tmp_path, "keep: 3\nregistry: 127.0.0.1:5000/releases/\n")
    assert load_channel(project, "edge").registry == "127.0.0.1:5000/releases"
    assert load_channel(REPO, "beta").registry is None  # the shipped channels name none


def test_unknown_channel(tmp_path: Path) -> None:
    project = _project(tmp_path, "keep: 1\n")
    with pytest.raises(UsageError) as e:
        load_channel(project, "stabel")
    assert e.value.hint is not None and "edge" in e.value.hint


def test_versions_order_naturally() -> None:
    versions = ["1.9", "1.10", "2026.11.27.1", "2026.11.27.10", "2026.11.27.2", "1.0"]
    assert sorted(versions, key=version_key) == [
        "1.0",
        "1.9",
        "1.10",
        "2026.11.27.1",
        "2026.11.27.2",
        "2026.11.27.10",
    ]


def test_waves_open_by_seed() -> None:
    r = Release("node", "2", published=1000, waves=(Wave(0, 100), Wave(3600, 1024)))
    assert r.is_open(seed=99, now=1000)
    assert not r.is_open(seed=100, now=1000 + 3599)
    assert r.is_open(seed=100, now=1000 + 3600)
    # seeds beyond the last wave may go once it opened
    assert r.opens_at(2047) == 1000 + 3600


def test_index_picks_newest_open_release_per_arch() -> None:
    old = Release("node", "1.9", 0, (), {"armv7": {"root.img": "root"}, "amd64": {"r": "root"}})
    new = Release(
        "node", "1.10", 5000, (Wave(0, 10), Wave(600, MAX_SEED)), {"armv7": {"r": "root"}}
    )
    index = ReleaseIndex("stable").with_release(new).with_release(old)
    assert [r.version for r in index.of("node")] == ["1.10", "1.9"]
    assert index.latest("node", "armv7") == new
    assert index.latest("node", "amd64") == old
    assert index.latest("node", "armv7", seed=5, now=5000) == new
    assert index.latest("node", "armv7", seed=500, now=5000) == old  # not in the first wave
    assert index.latest("node", "armv7", seed=500, now=5600) == new
    again = ReleaseIndex.from_json(index.to_json())
    assert again == index


def test_seed_is_stable_and_in_range() -> None:
    assert seed_from("machine-1") == seed_from("machine-1\n")
    assert all(0 <= seed_from(f"m{i}") < MAX_SEED for i in range(200))


def test_keys_are_private(tmp_path: Path) -> None:
    store = KeyStore.create(tmp_path / "keys", {"root": 3}, {"root": 2})
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    files = list((tmp_path / "keys").iterdir())
    assert len(files) == 1 + 3 + 1 + 1 + 1
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert store.roles["root"].threshold == 2 and len(store.roles["root"].keyids) == 3
    loaded = KeyStore.load(tmp_path / "keys")
    payload = b"hello"
    for signer in loaded.signers("root"):
        sig = signer.sign(payload)
        store.keys[sig.keyid].key.verify_signature(sig, payload)


def test_passphrase_protects_keys(tmp_path: Path) -> None:
    KeyStore.create(tmp_path / "keys", {}, {}, passphrase=b"correct horse")
    pem = next((tmp_path / "keys").glob("targets-*.pem")).read_text()
    assert "ENCRYPTED" in pem
    with pytest.raises(DistbuildError) as e:
        KeyStore.load(tmp_path / "keys").signers("targets")
    assert e.value.hint is not None and "DISTBUILD_KEY_PASSPHRASE" in e.value.hint
    with pytest.raises(DistbuildError):
        KeyStore.load(tmp_path / "keys", b"wrong").signers("targets")
    assert KeyStore.load(tmp_path / "keys", b"correct horse").signers("targets")


def test_threshold_above_key_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        KeyStore.create(tmp_path / "keys", {"root": 1}, {"root": 2})
    assert not (tmp_path / "keys" / "keys.json").exists()
