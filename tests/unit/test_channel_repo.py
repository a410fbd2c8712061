"""Channels as TUF repositories, read back by python-tuf's ngclient over HTTP.

The builds are small synthetic build records; the client and the HTTP server
are real (the server is started here, on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from distbuild.channel.admin import refresh_channel, rotate_roots
from distbuild.channel.keys import KeyStore
from distbuild.channel.pipeline import release_pipeline
from distbuild.channel.publish import promote, publish
from distbuild.channel.repo import GRACE, ChannelRepo, utcnow
from distbuild.channel.serve import Server, serving
from distbuild.channel.view import describe
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import INDEX_TARGET, WINDOW, ReleaseIndex
from distbuild.record import load_record
from tests.support.channel import ARCHES, channel, client, make_build, make_keys, tree

BETA = channel("beta")


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def server(repo: Path) -> Iterator[Server]:
    with serving(repo) as s:
        yield s


def root_of(repo: Path, name: str) -> bytes:
    return (repo / name / "metadata" / "root.json").read_bytes()


def fetch_index(updater: object, workdir: Path) -> ReleaseIndex:
    info = updater.get_targetinfo(INDEX_TARGET)  # type: ignore[attr-defined]
    assert info is not None
    path = updater.download_target(info, str(workdir / "releases.json"))  # type: ignore[attr-defined]
    return ReleaseIndex.from_json(Path(path).read_bytes())


def test_fresh_client_gets_latest_target_per_arch(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1.9"), keys)
    build = make_build(tmp_path / "b", "node", "1.10")
    outcome = publish(repo, BETA, build, keys)
    record, _ = load_record(build)
    assert len(outcome.targets) == 2 * len(ARCHES)  # lock + root per arch; no OCI content

    updater = client(server, "beta", root_of(repo, "beta"), tmp_path / "client")
    index = fetch_index(updater, tmp_path)
    for arch in ARCHES:
        release = index.latest("node", arch)
        assert release is not None and release.version == "1.10"
        for path in release.target_paths(arch):
            info = updater.get_targetinfo(path)
            assert info is not None
            assert info.custom == {
                "image": "node",
                "version": "1.10",
                "arch": arch,
                "kind": info.custom["kind"],
            }
            want = next(
                a for a in record.artifacts if a.arch == arch and a.kind == info.custom["kind"]
            )
            got = Path(
                updater.download_target(info, str(tmp_path / f"{arch}-{info.custom['kind']}"))
            )
            assert hashlib.sha256(got.read_bytes()).hexdigest() == want.sha256
            assert info.length == want.size
    # consistent snapshots: the file name carries the hash, inside the target's directory
    lock = next(a for a in record.artifacts if a.arch == "armv7" and a.kind == "lock")
    assert (repo / "beta/targets/node/1.10/armv7" / f"{lock.sha256}.packages.lock.json").is_file()


def test_idle_poll_fetches_timestamp_only(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1.0"), keys)
    work = tmp_path / "client"
    client(server, "beta", root_of(repo, "beta"), work).refresh()
    server.traffic.clear()
    again = client(server, "beta", (work / "metadata" / "root.json").read_bytes(), work)
    again.refresh()
    got = {(t.path.rsplit("/", 1)[1], t.status) for t in server.traffic.requests}
    assert got == {("2.root.json", 404), ("timestamp.json", 200)}
    assert server.traffic.total <= 2048


def test_retention_keeps_newest_and_deletes_files(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    edge = channel("edge", keep=2)
    old = publish(repo, edge, make_build(tmp_path / "b", "node", "1"), keys)
    publish(repo, edge, make_build(tmp_path / "b", "node", "2"), keys)
    outcome = publish(repo, edge, make_build(tmp_path / "b", "node", "3"), keys)
    assert outcome.pruned == ("1",)
    updater = client(server, "edge", root_of(repo, "edge"), tmp_path / "client")
    assert [r.version for r in fetch_index(updater, tmp_path).of("node")] == ["3", "2"]
    assert all(updater.get_targetinfo(p) is None for p in old.targets)
    # files stay a grace period for readers mid-poll, and go with a later commit
    assert (repo / "edge/targets/node/1").is_dir()
    superseded = repo / "edge/metadata/2.snapshot.json"
    assert superseded.is_file()
    later = utcnow() + GRACE + timedelta(minutes=1)
    publish(repo, edge, make_build(tmp_path / "b", "node", "4"), keys, now=later)
    assert not (repo / "edge/targets/node/1").exists() and not superseded.exists()
    assert (repo / "edge/targets/node/3").is_dir()
    fresh = client(server, "edge", root_of(repo, "edge"), tmp_path / "client2")
    assert [r.version for r in fetch_index(fresh, tmp_path).of("node")] == ["4", "3"]
    # an older version than the channel keeps would be dropped at once: refused
    with pytest.raises(DistbuildError, match="older than the 2 releases"):
        publish(repo, edge, make_build(tmp_path / "b", "node", "0"), keys, now=later)


def test_promote_resigns_same_hashes_and_survives_source_retention(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    beta, stable = channel("beta", keep=1), channel("stable")
    publish(repo, beta, make_build(tmp_path / "b", "node", "1"), keys)
    outcome = promote(repo, beta, stable, "1", keys)
    beta_client = client(server, "beta", root_of(repo, "beta"), tmp_path / "c1")
    stable_client = client(server, "stable", root_of(repo, "stable"), tmp_path / "c2")
    for path in outcome.targets:
        b, s = beta_client.get_targetinfo(path), stable_client.get_targetinfo(path)
        assert b is not None and s is not None
        assert s.hashes == b.hashes and s.length == b.length and s.custom == b.custom
    # beta moves on and drops release 1 (files too, after the grace period);
    # stable still serves it, byte for byte
    publish(repo, beta, make_build(tmp_path / "b", "node", "2"), keys)
    later = utcnow() + GRACE + timedelta(minutes=1)
    publish(repo, beta, make_build(tmp_path / "b", "node", "3"), keys, now=later)
    assert not (repo / "beta/targets/node/1").exists()
    fresh = client(server, "stable", root_of(repo, "stable"), tmp_path / "c3")
    for path in outcome.targets:
        info = fresh.get_targetinfo(path)
        assert info is not None
        data = Path(fresh.download_target(info, str(tmp_path / "dl"))).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.hashes["sha256"]


def test_republish_is_idempotent_and_changed_content_refused(
    tmp_path: Path, repo: Path, keys: KeyStore
) -> None:
    build = make_build(tmp_path / "b", "node", "1")
    publish(repo, BETA, build, keys)
    before = tree(repo)
    assert publish(repo, BETA, build, keys).unchanged
    assert tree(repo) == before
    other = make_build(tmp_path / "c", "node", "1", size=400)
    with pytest.raises(DistbuildError, match="other content"):
        publish(repo, BETA, other, keys)
    assert tree(repo) == before


def test_changed_build_file_is_refused(tmp_path: Path, repo: Path, keys: KeyStore) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    before = tree(repo)
    build = make_build(tmp_path / "b", "node", "2")
    (build / "amd64" / "root.img").write_bytes(b"not what was built")
    with pytest.raises(DistbuildError, match="changed since it was recorded"):
        publish(repo, BETA, build, keys)
    assert tree(repo) == before


def test_refresh_resigns_only_near_expiry(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    publish(
        repo,
        BETA,
        make_build(tmp_path / "b", "node", "1"),
        keys,
        now=utcnow() - timedelta(hours=20),
    )
    work = tmp_path / "client"
    client(server, "beta", root_of(repo, "beta"), work).refresh()
    result = refresh_channel(repo, BETA, keys)
    assert result.roles == ("timestamp",)  # 4h left of 1d; snapshot and targets have days
    assert refresh_channel(repo, BETA, keys).roles == ()
    forced = refresh_channel(repo, BETA, keys, force=True)
    assert {"targets", "snapshot", "timestamp"} <= set(forced.roles)
    # the client that knew the old state follows the re-signed one
    updater = client(server, "beta", (work / "metadata/root.json").read_bytes(), work)
    updater.refresh()
    timestamp = json.loads((work / "metadata/timestamp.json").read_bytes())["signed"]
    assert timestamp["version"] == 4


def test_expired_timestamp_is_reported(tmp_path: Path, repo: Path, keys: KeyStore) -> None:
    publish(
        repo,
        BETA,
        make_build(tmp_path / "b", "node", "1"),
        keys,
        now=utcnow() - timedelta(days=2),
        pipeline=release_pipeline(BETA).targets_only(),
    )
    with pytest.raises(DistbuildError) as e:
        describe(ChannelRepo(repo, "beta"))
    assert "expired" in str(e.value) and e.value.hint is not None and "refresh" in e.value.hint
    refresh_channel(repo, BETA, keys)
    assert describe(ChannelRepo(repo, "beta")).latest


def test_root_rotation_is_followed_by_old_clients(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    first_root = root_of(repo, "beta")
    old_root_keys = set(keys.roles["root"].keyids)
    keys.rotate("root", 3, 2)
    assert rotate_roots(repo, {"beta": BETA}, keys) == {"beta": 2}
    root2 = json.loads(root_of(repo, "beta"))
    signers = set(root2["signatures"][i]["keyid"] for i in range(len(root2["signatures"])))
    assert old_root_keys <= signers and set(keys.roles["root"].keyids) <= signers
    publish(repo, BETA, make_build(tmp_path / "b", "node", "2"), keys)
    updater = client(server, "beta", first_root, tmp_path / "client")
    assert fetch_index(updater, tmp_path).latest("node", "amd64") is not None
    trusted = json.loads((tmp_path / "client/metadata/root.json").read_bytes())["signed"]
    assert trusted["version"] == 2
    assert set(trusted["roles"]["root"]["keyids"]) == set(keys.roles["root"].keyids)


def test_rotation_without_old_root_keys_is_refused(
    tmp_path: Path, repo: Path, keys: KeyStore
) -> None:
    publish(repo, BETA, make_build(tmp_path / "b", "node", "1"), keys)
    old = keys.roles["root"].keyids
    keys.rotate("root", 1, 1)
    for keyid in old:
        (keys.path / keys.retired[keyid].file).unlink()
    fresh = KeyStore.load(keys.path)
    before = tree(repo)
    with pytest.raises(DistbuildError, match="not enough of its current root keys"):
        rotate_roots(repo, {"beta": BETA}, fresh)
    assert tree(repo) == before


def test_keep_all_lists_newest_window_and_keeps_older_targets(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    forever = channel("forever", keep=0)
    first = None
    for i in range(WINDOW + 2):
        outcome = publish(
            repo, forever, make_build(tmp_path / "b", "node", f"1.{i}", ("amd64",)), keys
        )
        first = first or outcome
    assert first is not None
    updater = client(server, "forever", root_of(repo, "forever"), tmp_path / "client")
    index = fetch_index(updater, tmp_path)
    listed = [r.version for r in index.of("node")]
    assert len(listed) == WINDOW and listed[0] == f"1.{WINDOW + 1}"
    assert index.total("node") == WINDOW + 2
    for path in first.targets:  # unlisted, but still signed and served
        info = updater.get_targetinfo(path)
        assert info is not None
        updater.download_target(info, str(tmp_path / "old"))


def test_keep_beyond_the_window_prunes_from_the_history(
    tmp_path: Path, repo: Path, keys: KeyStore, server: Server
) -> None:
    deep = channel("deep", keep=WINDOW + 3)
    first = None
    for i in range(WINDOW + 5):
        build = make_build(tmp_path / "b", "node", f"1.{i:02}", ("arm64",))
        outcome = publish(repo, deep, build, keys)
        first = first or outcome
    assert outcome.pruned == ("1.01",)
    assert first is not None
    updater = client(server, "deep", root_of(repo, "deep"), tmp_path / "client")
    index = fetch_index(updater, tmp_path)
    assert len(index.of("node")) == WINDOW and index.total("node") == WINDOW + 3
    assert all(updater.get_targetinfo(p) is None for p in first.targets)  # pruned
    kept = make_build(tmp_path / "b", "node", "1.02", ("arm64",))
    assert updater.get_targetinfo("node/1.02/arm64/root.img") is not None  # held, unlisted
    assert publish(repo, deep, kept, keys).unchanged
    # a held but unlisted release can still be promoted
    promoted = promote(repo, deep, channel("stable"), "1.02", keys)
    assert promoted.targets == ("node/1.02/arm64/packages.lock.json", "node/1.02/arm64/root.img")
