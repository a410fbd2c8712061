"""Key directories are hostile input: the wrong set, swapped or exposed files, root keys in CI.

Every refusal must happen before anything is written (the whole repository
hashes the same before and after) and leave a channel that a real TUF client,
trusting the channel's first root, still reads.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distbuild.channel.admin import create_channel, refresh_channel, rotate_roots
from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import promote, publish
from distbuild.channel.repo import ChannelRepo
from distbuild.channel.view import describe
from distbuild.core.errors import DistbuildError
from tests.conftest import assert_clean_error
from tests.conftest import distbuild_process as cli
from tests.support.channel import channel, make_build, make_keys, online_keys

BETA, STABLE = channel("beta"), channel("stable")


def digest(path: Path) -> str:
    """One hash over every file name, mode and content under ``path`` (the lock aside)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.name == ".lock":
            continue
        h.update(f"{p.relative_to(path)} {p.stat().st_mode:o}\n".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def client_sees(repo: Path, name: str) -> list[str]:
    """The versions a fresh ngclient from 1.root.json sees in the channel."""
    return describe(ChannelRepo(repo, name)).releases.get("node", [])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def published(tmp_path: Path, repo: Path, keys: KeyStore) -> Path:
    """beta holds 1 and 2, stable holds 1."""
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    promote(repo, BETA, STABLE, "1", keys)
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), keys)
    return repo


def test_foreign_key_set_is_refused_by_every_writer_and_changes_nothing(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, project: Path
) -> None:
    other = make_keys(tmp_path / "other")
    before = digest(repo)
    ours, theirs = keys.roles["targets"].keyids[0][:16], other.roles["targets"].keyids[0][:16]
    with pytest.raises(DistbuildError, match="needs 1 signature") as e:
        publish(repo, BETA, make_build(tmp_path / "b", "node", "3"), other)
    assert keys.roles["targets"].keyids[0][:16] in e.value.message
    assert other.roles["targets"].keyids[0][:16] in e.value.message
    with pytest.raises(DistbuildError, match="needs 1 signature"):
        promote(repo, BETA, STABLE, "2", other)
    with pytest.raises(DistbuildError, match=f"targets role .*{ours}.*{theirs}"):
        refresh_channel(repo, BETA, KeyStore.load(other.path, allow_root_keys=True), force=True)
    with pytest.raises(DistbuildError, match="lists targets key"):
        rotate_roots(repo, {"beta": BETA, "stable": STABLE}, other)
    assert digest(repo) == before
    # The command a user runs: a clear error naming the role and key ids, exit != 70.
    done = cli(
        "--project", project, "publish", make_build(tmp_path / "b", "node", "4"),
        "--channel", "beta", "--repo", repo, "--keys", other.path, "--allow-root-keys",
    )  # fmt: skip
    assert_clean_error(done, "channel beta", "needs 1 signature")
    assert digest(repo) == before
    assert client_sees(repo, "beta") == ["2", "1"] and client_sees(repo, "stable") == ["1"]
    # The right keys still publish: nothing was left half-done.
    publish(repo, BETA, make_build(tmp_path / "b", "node", "3"), keys)
    assert client_sees(repo, "beta") == ["3", "2", "1"]


@pytest.mark.parametrize("swap", ["other-role", "public-key", "garbage", "directory"])
def test_swapped_or_garbage_key_file_is_a_clean_error(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, project: Path, swap: str
) -> None:
    bad = Path(shutil.copytree(keys.path, tmp_path / "bad"))
    timestamp = bad / keys.keys[keys.roles["timestamp"].keyids[0]].file
    snapshot = bad / keys.keys[keys.roles["snapshot"].keyids[0]].file
    expected = {
        "other-role": "holds snapshot key",
        "public-key": "not a private key",
        "garbage": "damaged key",
        "directory": "not a regular file",
    }[swap]
    timestamp.unlink()
    if swap == "other-role":
        shutil.copy2(snapshot, timestamp)
    elif swap == "directory":
        timestamp.mkdir(mode=0o700)
    else:
        signer = keys.signers("timestamp")[0]
        public = signer.public_key.to_dict()  # type: ignore[attr-defined]
        text = (
            b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA" if swap == "public-key" else b"\x00junk"
        )
        timestamp.write_bytes(text + str(public).encode())
        timestamp.chmod(0o600)
    before = digest(repo)
    with pytest.raises(DistbuildError, match=expected):
        publish(
            repo,
            BETA,
            make_build(tmp_path / "b", "node", "3"),
            KeyStore.load(bad, allow_root_keys=True),
        )
    done = cli(
        "--project", project, "channel", "refresh", "--force",
        "--repo", repo, "--keys", bad, "--allow-root-keys",
    )  # fmt: skip
    assert_clean_error(done, expected)
    assert digest(repo) == before
    assert client_sees(repo, "beta") == ["2", "1"]


@pytest.mark.parametrize("what", ["key-file", "directory", "group-readable"])
def test_unprotected_key_files_are_refused(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, project: Path, what: str
) -> None:
    file = keys.path / keys.keys[keys.roles["snapshot"].keyids[0]].file
    target, mode, fix = {
        "key-file": (file, 0o644, "chmod 600"),
        "group-readable": (file, 0o640, "chmod 600"),
        "directory": (keys.path, 0o755, "chmod 700"),
    }[what]
    target.chmod(mode)
    before = digest(repo)
    with pytest.raises(DistbuildError, match="UNPROTECTED PRIVATE KEY FILE") as e:
        publish(
            repo,
            BETA,
            make_build(tmp_path / "b", "node", "3"),
            KeyStore.load(keys.path, allow_root_keys=True),
        )
    assert e.value.hint is not None and fix in e.value.hint
    done = cli(
        "--project", project, "publish", make_build(tmp_path / "b", "node", "3"),
        "--channel", "beta", "--repo", repo, "--keys", keys.path, "--allow-root-keys",
    )  # fmt: skip
    assert_clean_error(done, "UNPROTECTED PRIVATE KEY FILE", str(target))
    assert fix in done.stderr
    assert digest(repo) == before


def test_key_file_names_cannot_leave_the_directory(tmp_path: Path, keys: KeyStore) -> None:
    data = (keys.path / "keys.json").read_text()
    file = keys.keys[keys.roles["timestamp"].keyids[0]].file
    (keys.path / "keys.json").write_text(data.replace(file, "../../etc/shadow"))
    with pytest.raises(DistbuildError, match="unreadable key file"):
        KeyStore.load(keys.path)


def test_export_online_holds_no_root_key_and_publishes(
    tmp_path: Path, repo: Path, keys: KeyStore, published: Path, project: Path
) -> None:
    out = tmp_path / "ci-keys"
    done = cli("keys", "export-online", "--keys", keys.path, "--out", out)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    online_ids = {k for r in ("targets", "snapshot", "timestamp") for k in keys.roles[r].keyids}
    assert sorted(p.name for p in out.glob("*.pem")) == sorted(
        keys.keys[k].file for k in online_ids
    )
    exported = KeyStore.load(out)
    assert exported.root_key_files() == []
    assert exported.signer_for(keys.roles["root"].keyids[0]) is None

    build = make_build(tmp_path / "b", "node", "3")
    common = ("--project", project, "--repo", repo)
    before = digest(repo)
    # The full directory is refused without being told otherwise ...
    refused = cli(
        *common[:2], "publish", build, "--channel", "beta", *common[2:], "--keys", keys.path
    )
    assert_clean_error(refused, "holds root private keys")
    assert "export-online" in refused.stderr
    refused = cli(*common[:2], "channel", "refresh", *common[2:], "--keys", keys.path)
    assert_clean_error(refused, "holds root private keys")
    with pytest.raises(DistbuildError, match="holds root private keys"):
        promote(repo, BETA, STABLE, "2", KeyStore.load(keys.path))
    assert digest(repo) == before
    # ... the exported one publishes, promotes and refreshes.
    done = cli(*common[:2], "publish", build, "--channel", "beta", *common[2:], "--keys", out)
    assert done.returncode == 0, done.stderr
    done = cli(
        *common[:2], "promote", "beta", "stable", "--release", "3", *common[2:], "--keys", out
    )
    assert done.returncode == 0, done.stderr
    done = cli(*common[:2], "channel", "refresh", "--force", *common[2:], "--keys", out)
    assert done.returncode == 0, done.stderr
    assert client_sees(repo, "beta") == ["3", "2", "1"] and client_sees(repo, "stable") == [
        "3",
        "1",
    ]
    # A new channel needs the root keys once; the online ones cannot create it.
    refused = cli(*common[:2], "publish", build, "--channel", "alpha", *common[2:], "--keys", out)
    assert_clean_error(refused, "creating it needs the root")
    assert "channel init alpha" in refused.stderr and not (repo / "alpha" / "metadata").exists()
    # Told otherwise (flag or environment), the full directory may sign.
    done = cli(
        *common[:2], "publish", build, "--channel", "alpha", *common[2:], "--keys", keys.path,
        env={"DISTBUILD_ALLOW_ROOT_KEYS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert client_sees(repo, "alpha") == ["3"]


def test_online_keys_helper_matches_the_cli(tmp_path: Path, keys: KeyStore, repo: Path) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    online = online_keys(keys, tmp_path / "online")
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), online)
    assert client_sees(repo, "beta") == ["2", "1"]
    with pytest.raises(DistbuildError, match="not an empty directory"):
        keys.export_online(tmp_path / "online")


def test_channel_creation_a_client_would_refuse_leaves_no_channel(
    tmp_path: Path, repo: Path, keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signer that does not match keys.json (a bug, or a key swapped in memory).
    other = make_keys(tmp_path / "other")
    real = keys.signers
    monkeypatch.setattr(
        keys, "signers", lambda role: other.signers(role) if role == "timestamp" else real(role)
    )
    with pytest.raises(DistbuildError, match="fails verification as a client"):
        create_channel(repo, BETA, keys)
    assert not (repo / "beta" / "metadata").exists()
    monkeypatch.undo()
    assert create_channel(repo, BETA, keys)
    assert client_sees(repo, "beta") == []
