"""``keys rotate-root`` stopped at every write, then run again: no client is stranded.

Clients probe ``N+1.root.json`` whatever ``root.json`` says, so a root a
stopped run wrote may already be trusted. The crash is simulated by making
the k-th atomic write raise (before it happens): atomic writes mean every
state a SIGKILL can leave is one of these.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distbuild.channel import admin
from distbuild.channel import keys as keys_module
from distbuild.channel import repo as repo_module
from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import publish
from distbuild.channel.trust import FileFetcher
from distbuild.channel.tufapi import Updater
from distbuild.core.fsutil import write_atomic
from tests.conftest import run_cli
from tests.support.channel import channel, make_build, make_keys

CHANNELS = ("beta", "stable")
# One new root key + keys.json, then N+1.root.json and root.json per channel.
WRITES = 2 + 2 * len(CHANNELS)


class Crash(BaseException):
    """Stands for SIGKILL: nothing catches it, nothing cleans up."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("rotate")
    keys = make_keys(base / "keys")
    for name in CHANNELS:
        publish(base / "repo", channel(name), make_build(base / "b", "node", "1"), keys)
    return base


def persistent_client(repo: Path, name: str, workdir: Path) -> Updater:
    """A node's client: bootstraps from 1.root.json once, then trusts what it stored."""
    meta = repo / name / "metadata"
    stored = workdir / "metadata" / "root.json"
    (workdir / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(workdir / "metadata"),
        metadata_base_url=meta.resolve().as_uri() + "/",
        target_dir=str(workdir / "targets"),
        target_base_url=(repo / name / "targets").resolve().as_uri() + "/",
        fetcher=FileFetcher(),
        bootstrap=None if stored.exists() else (meta / "1.root.json").read_bytes(),
    )


def refresh_and_find(repo: Path, name: str, workdir: Path, path: str) -> bool:
    updater = persistent_client(repo, name, workdir)
    updater.refresh()
    return updater.get_targetinfo(path) is not None


def crash_at(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    calls = []

    def write(path: Path, data: bytes, mode: int | None = 0o644) -> None:
        if len(calls) == k:
            raise Crash(f"killed before write {k}: {path.name}")
        calls.append(path)
        write_atomic(path, data, mode)

    for module in (keys_module, repo_module, admin):
        monkeypatch.setattr(module, "write_atomic", write)


def rotate(project: Path, base: Path) -> int:
    return run_cli(
        "--project", project, "keys", "rotate-root", "--keys", base / "keys", "--repo", base / "repo"
    )  # fmt: skip


@pytest.mark.parametrize("k", range(WRITES))
def test_rotate_root_rerun_after_a_crash_at_each_write(
    tmp_path: Path, template: Path, project: Path, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    base = Path(shutil.copytree(template, tmp_path / "base", symlinks=True))
    repo = base / "repo"
    for name in CHANNELS:  # a node that polled before the rotation
        assert refresh_and_find(repo, name, tmp_path / f"early-{name}", "node/1/amd64/root.img")

    crash_at(monkeypatch, k)
    with pytest.raises(Crash):
        rotate(project, base)
    monkeypatch.undo()
    orphans = {}
    for name in CHANNELS:  # nodes that polled mid-rotation and may hold an orphan root 2
        assert refresh_and_find(repo, name, tmp_path / f"mid-{name}", "node/1/amd64/root.img")
        orphan = repo / name / "metadata" / "2.root.json"
        if orphan.exists():
            orphans[name] = orphan.read_bytes()

    assert rotate(project, base) == 0  # the re-run finishes the rotation
    for name, data in orphans.items():
        assert (repo / name / "metadata" / "2.root.json").read_bytes() == data
    keys = KeyStore.load(base / "keys", allow_root_keys=True)
    for name in CHANNELS:
        root = (repo / name / "metadata" / "root.json").read_text()
        assert all(k in root for k in keys.roles["root"].keyids)

    # A further rotation with new keys, then a publish: every node follows.
    assert rotate(project, base) == 0
    keys = KeyStore.load(base / "keys", allow_root_keys=True)
    for name in CHANNELS:
        publish(repo, channel(name), make_build(base / "b", "node", "2"), keys)
        for who in ("early", "mid", "fresh"):
            workdir = tmp_path / f"{who}-{name}"
            assert refresh_and_find(repo, name, workdir, "node/2/amd64/root.img"), (who, name)
        trusted = (tmp_path / f"mid-{name}" / "metadata" / "root.json").read_text()
        assert all(k in trusted for k in keys.roles["root"].keyids)


def test_a_stopped_rotation_makes_no_new_keys_on_rerun(
    tmp_path: Path, template: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(shutil.copytree(template, tmp_path / "base", symlinks=True))
    crash_at(monkeypatch, 2 + 2)  # keys made, beta rotated, stable not
    with pytest.raises(Crash):
        rotate(project, base)
    monkeypatch.undo()
    made = KeyStore.load(base / "keys").roles["root"].keyids
    assert rotate(project, base) == 0
    assert KeyStore.load(base / "keys").roles["root"].keyids == made
    for name, version in (("beta", "2"), ("stable", "2")):
        assert (base / "repo" / name / "metadata" / f"{version}.root.json").exists()
        assert not (base / "repo" / name / "metadata" / "3.root.json").exists()
