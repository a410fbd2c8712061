"""Board files through channels: publish, a real TUF client by name, promote, retention.

The build records are synthetic (small files in the shared board layout, see
tests/support/boards.py); the channel, the HTTP server and python-tuf's
ngclient are real.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import promote, publish
from distbuild.channel.repo import GRACE, utcnow
from distbuild.channel.serve import Server, serving
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import (
    INDEX_FORMAT,
    INDEX_TARGET,
    IndexNameError,
    Release,
    ReleaseIndex,
    target_path,
)
from tests.support.boards import add_board_files, dtb_bytes
from tests.support.channel import channel, client, make_build, make_keys, tree
from tests.support.node import Channel as NodeChannel
from tests.support.node import relabel
from tests.support.sigstore import BUNDLE

BOARDS = {"armv7": {"orangepi-pc-qemu": True, "qemu": False}, "arm64": {"rpi3": True}}


@dataclass(frozen=True)
class World:
    """A repository served on 127.0.0.1 and the keys that sign its channels."""

    repo: Path
    keys: KeyStore
    server: Server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "repo").mkdir()
    with serving(tmp_path / "repo") as server:
        yield World(tmp_path / "repo", make_keys(tmp_path / "keys"), server)


def board_build(out: Path, version: str) -> tuple[Path, dict[str, bytes]]:
    """A build of 'node' for armv7 and arm64 with the boards of :data:`BOARDS`."""
    build = make_build(out, "node", version, arches=("armv7", "arm64"))
    written: dict[str, bytes] = {}
    for arch, boards in BOARDS.items():
        for board, dtb in boards.items():
            written.update(add_board_files(build, arch, board, dtb=dtb))
    return build, written


def fetch_index(updater: object, workdir: Path) -> tuple[ReleaseIndex, dict[str, object]]:
    info = updater.get_targetinfo(INDEX_TARGET)  # type: ignore[attr-defined]
    assert info is not None
    path = Path(updater.download_target(info, str(workdir / "releases.json")))  # type: ignore[attr-defined]
    return ReleaseIndex.from_json(path.read_bytes()), json.loads(path.read_bytes())


def root_of(repo: Path, name: str) -> bytes:
    return (repo / name / "metadata" / "root.json").read_bytes()


def test_board_files_are_targets_in_a_board_directory_fetched_by_name(
    tmp_path: Path, world: World
) -> None:
    repo, keys, server = world.repo, world.keys, world.server
    build, written = board_build(tmp_path / "b", "1.0")
    outcome = publish(repo, channel("beta"), build, keys)
    dtb = "node/1.0/armv7/orangepi-pc-qemu/board.dtb"
    assert {
        dtb,
        "node/1.0/armv7/orangepi-pc-qemu/disk.img",
        "node/1.0/armv7/orangepi-pc-qemu/disk.img.bmap",
        "node/1.0/armv7/qemu/disk.img",
        "node/1.0/armv7/qemu/disk.img.bmap",
        "node/1.0/arm64/rpi3/board.dtb",
        "node/1.0/arm64/rpi3/disk.img",
        "node/1.0/armv7/root.img",
    } <= set(outcome.targets)
    assert "node/1.0/armv7/qemu/board.dtb" not in outcome.targets

    updater = client(server, "beta", root_of(repo, "beta"), tmp_path / "client")
    index, raw = fetch_index(updater, tmp_path)
    # The shape documented in distbuild.core.releases, still format 1.
    assert raw["format"] == INDEX_FORMAT == 1
    (listed,) = raw["releases"]  # type: ignore[attr-defined]
    assert listed["boards"]["armv7"] == {
        "orangepi-pc-qemu": {"disk.img": "disk", "disk.img.bmap": "disk-bmap", "board.dtb": "dtb"},
        "qemu": {"disk.img": "disk", "disk.img.bmap": "disk-bmap"},
    }
    # A reader that knows only 'files' (a node in the field) sees no board file.
    assert set(listed["files"]["armv7"]) == {"packages.lock.json", "root.img"}

    release = index.latest("node", "armv7")
    assert release is not None and release.board_names("armv7") == ["orangepi-pc-qemu", "qemu"]
    assert release.board_target("armv7", "orangepi-pc-qemu", "dtb") == dtb
    assert release.board_target("armv7", "qemu", "dtb") is None
    assert release.board_target("armv7", "rpi3", "dtb") is None  # rpi3 is an arm64 board
    found = index.latest_for_board("node", "arm64", "rpi3", "disk")
    assert found is not None and found[1] == "node/1.0/arm64/rpi3/disk.img"
    assert index.latest_for_board("node", "arm64", "bananapi", "disk") is None

    board_paths = [p for p in release.target_paths() if p.count("/") == 4]
    assert len(board_paths) == 8
    for path in board_paths:
        _, _, arch, board, name = path.split("/")
        info = updater.get_targetinfo(path)
        assert info is not None, path
        kind = {"disk.img": "disk", "disk.img.bmap": "disk-bmap", "board.dtb": "dtb"}[name]
        assert info.custom == {
            "image": "node",
            "version": "1.0",
            "arch": arch,
            "kind": kind,
            "board": board,
        }
        got = Path(updater.download_target(info, str(tmp_path / "dl"))).read_bytes()
        source = f"{arch}/disk/{board}/{name}" if kind != "dtb" else f"{arch}/root/{board}/{name}"
        assert got == written[source]
    assert written["armv7/root/orangepi-pc-qemu/board.dtb"] == dtb_bytes("orangepi-pc-qemu", "1.0")
    # Stored inside the board's directory under the release, named by hash.
    digest = hashlib.sha256(written["armv7/root/orangepi-pc-qemu/board.dtb"]).hexdigest()
    assert (repo / "beta/targets/node/1.0/armv7/orangepi-pc-qemu" / f"{digest}.board.dtb").is_file()


def test_promotion_resigns_board_targets_and_retention_prunes_them(
    tmp_path: Path, world: World
) -> None:
    repo, keys, server = world.repo, world.keys, world.server
    beta, stable = channel("beta", keep=1), channel("stable")
    build, _ = board_build(tmp_path / "b", "1")
    publish(repo, beta, build, keys)
    outcome = promote(repo, beta, stable, "1", keys)
    board_targets = [p for p in outcome.targets if p.count("/") == 4]
    assert len(board_targets) == 8
    beta_client = client(server, "beta", root_of(repo, "beta"), tmp_path / "c1")
    stable_client = client(server, "stable", root_of(repo, "stable"), tmp_path / "c2")
    for path in board_targets:
        b, s = beta_client.get_targetinfo(path), stable_client.get_targetinfo(path)
        assert b is not None and s is not None
        assert (s.hashes, s.length, s.custom) == (b.hashes, b.length, b.custom)
    index, _ = fetch_index(stable_client, tmp_path)
    promoted = index.find("node", "1")
    assert promoted is not None
    assert promoted.board_target("armv7", "orangepi-pc-qemu", "dtb") is not None

    # beta keeps one release: 1's board files leave it (after the grace period) ...
    publish(repo, beta, board_build(tmp_path / "b", "2")[0], keys)
    later = utcnow() + GRACE + timedelta(minutes=1)
    publish(repo, beta, board_build(tmp_path / "b", "3")[0], keys, now=later)
    fresh = client(server, "beta", root_of(repo, "beta"), tmp_path / "c3")
    assert all(fresh.get_targetinfo(p) is None for p in board_targets)
    assert not (repo / "beta/targets/node/1").exists()
    assert (repo / "beta/targets/node/3/armv7/orangepi-pc-qemu").is_dir()
    # ... and stable still serves them, byte for byte.
    again = client(server, "stable", root_of(repo, "stable"), tmp_path / "c4")
    for path in board_targets:
        info = again.get_targetinfo(path)
        assert info is not None
        data = Path(again.download_target(info, str(tmp_path / "dl"))).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.hashes["sha256"]


@pytest.mark.parametrize("board", ["../escape", "a/b", ".hidden", "", "x" * 129, "naïve"])
def test_a_board_name_outside_the_grammar_never_becomes_a_path(
    tmp_path: Path, world: World, board: str
) -> None:
    repo, keys = world.repo, world.keys
    # From a build record: refused before anything is written.
    build = make_build(tmp_path / "b", "node", "1.0", arches=("armv7",))
    record = json.loads((build / "build.json").read_text())
    add_board_files(build, "armv7", "orangepi-pc-qemu")
    record = json.loads((build / "build.json").read_text())
    for a in record["artifacts"]:
        if a.get("board"):
            a["board"] = board
    (build / "build.json").write_text(json.dumps(record))
    before = tree(repo)
    with pytest.raises(DistbuildError, match="board"):
        publish(repo, channel("beta"), build, keys)
    assert tree(repo) == before
    # As a target name.
    with pytest.raises(IndexNameError):
        target_path("node", "1.0", "armv7", "board.dtb", board)
    # From a server's index.
    release = Release("node", "1.0", 0, (), {}, {"armv7": {"qemu": {"disk.img": "disk"}}})
    hostile = json.loads(ReleaseIndex("beta", (release,)).to_json())
    hostile["releases"][0]["boards"]["armv7"] = {board: {"disk.img": "disk"}}
    with pytest.raises(IndexNameError, match=r"releases\.json"):
        ReleaseIndex.from_json(json.dumps(hostile).encode())


def test_hostile_index_shapes_are_refused() -> None:
    release = Release("node", "1.0", 0, (), {}, {"armv7": {"qemu": {"disk.img": "disk"}}})
    good = json.loads(ReleaseIndex("beta", (release,)).to_json())
    for files in ({"../disk.img": "disk"}, {"disk.img": "../kind"}, ["disk.img"], "disk.img"):
        bad = json.loads(json.dumps(good))
        bad["releases"][0]["boards"]["armv7"]["qemu"] = files
        with pytest.raises(DistbuildError):
            ReleaseIndex.from_json(json.dumps(bad).encode())
    # Two device trees for one board: which one boots is not guessed.
    two = Release("node", "1.0", 0, (), {}, {"armv7": {"b": {"x.dtb": "dtb", "y.dtb": "dtb"}}})
    with pytest.raises(IndexNameError, match="2 dtb files"):
        two.board_target("armv7", "b", "dtb")


def test_an_index_without_boards_reads_and_writes_as_before() -> None:
    # Bytes as a channel wrote them before boards existed (format 1, no 'boards').
    old = (
        b'{"channel":"stable","format":1,"releases":[{"files":{"armv7":{"root.img":"root"}},'
        b'"image":"node","published":"2026-11-30T18:00:00Z","version":"1.0","waves":[]}],'
        b'"totals":{"node":1}}\n'
    )
    index = ReleaseIndex.from_json(old)
    (release,) = index.releases
    assert release.boards == {} and release.board_names() == []
    assert release.target_paths() == ["node/1.0/armv7/root.img"]
    assert index.to_json() == old  # no 'boards' key when there are none


def test_a_target_relabelled_as_another_board_is_not_promoted(tmp_path: Path, world: World) -> None:
    """Promotion lists a target by its signed names; a name that disagrees is refused."""
    repo, keys = world.repo, world.keys
    beta = channel("stable")
    build, _ = board_build(tmp_path / "b", "1")
    publish(repo, beta, build, keys)
    relabel(
        NodeChannel(repo, keys, tmp_path / "b"),
        "node/1/armv7/orangepi-pc-qemu/board.dtb",
        board="qemu",
    )
    before = tree(repo)
    with pytest.raises(DistbuildError, match="is signed as"):
        promote(repo, beta, channel("prod"), "1", keys)
    assert not (repo / "prod" / "metadata").exists()
    assert {k: v for k, v in tree(repo).items() if k.startswith("stable/")} == {
        k: v for k, v in before.items() if k.startswith("stable/")
    }


@pytest.mark.network
def test_a_board_files_bundle_is_published_beside_it(
    tmp_path: Path, world: World, signed_wheel: Path
) -> None:
    """CI's Sigstore bundle of a board file lands in the same board directory."""
    build = make_build(tmp_path / "b", "node", "1.0", arches=("armv7",))
    name = signed_wheel.name  # the bytes the fixture bundle signs, as one board's file
    add_board_files(build, "armv7", "qemu", dtb=False, **{f"disk/qemu/{name}": ("disk", b"")})
    record = json.loads((build / "build.json").read_text())
    (art,) = [a for a in record["artifacts"] if a["path"].endswith(name)]
    (build / art["path"]).write_bytes(signed_wheel.read_bytes())
    art["sha256"] = hashlib.sha256(signed_wheel.read_bytes()).hexdigest()
    art["size"] = signed_wheel.stat().st_size
    (build / "build.json").write_text(json.dumps(record))
    bundle = build / "sigstore" / (art["path"] + ".sigstore.json")
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(BUNDLE.read_bytes())
    outcome = publish(world.repo, channel("beta"), build, world.keys)
    target = f"node/1.0/armv7/qemu/{name}.sigstore.json"
    assert target in outcome.targets
    updater = client(world.server, "beta", root_of(world.repo, "beta"), tmp_path / "c")
    updater.refresh()
    info = updater.get_targetinfo(target)
    assert info is not None and info.custom["board"] == "qemu"
    assert info.custom["signs"] == name and info.custom["kind"] == "sigstore-bundle"
