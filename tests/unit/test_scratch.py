"""Scratch directories name their owner; only a dead owner's are reaped."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from distbuild import scratch
from distbuild.core.fsutil import clone_file


def test_own_directory_is_alive_and_kept(tmp_path: Path) -> None:
    mine = scratch.make_dir(tmp_path, "work-")
    assert mine.name.startswith(f"work-{os.getpid()}-")
    assert scratch.owner_alive(mine.name, "work-")
    assert scratch.reap(tmp_path, "work-") == []
    assert mine.is_dir()


def test_dead_reused_or_rebooted_owner_is_reaped(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    pid, start, boot = scratch.owner_tag().split("-")
    dead = tmp_path / f"work-{child.pid}-{start}-{boot}-x1"
    reused = tmp_path / f".1.0.partial-{pid}-{int(start) + 1}-{boot}-x2"  # same pid, other process
    rebooted = tmp_path / f"work-{pid}-{start}-{'0' * 8 if boot != '0' * 8 else '1' * 8}-x3"
    for d in (dead, reused, rebooted):
        (d / "sub").mkdir(parents=True)
    foreign = tmp_path / "work-abc12345"  # not ours to judge: no owner tag
    foreign.mkdir()
    assert set(scratch.reap(tmp_path, "work-")) == {dead, rebooted}
    assert scratch.reap(tmp_path, ".partial-") == [reused]
    assert [p.name for p in tmp_path.iterdir()] == [foreign.name]


def test_os_error_names_the_full_directory(tmp_path: Path) -> None:
    e = scratch.os_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert str(tmp_path) in e.message and e.hint and "free some space" in e.hint
    e = scratch.os_error(OSError(errno.EACCES, "Permission denied", str(tmp_path / "x")))
    assert e.message == f"{tmp_path / 'x'}: Permission denied" and e.hint


def test_clone_is_a_file_of_its_own(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"layer" * 1000)
    dest = tmp_path / "dest"
    clone_file(src, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_ino != src.stat().st_ino and src.stat().st_nlink == 1
    with src.open("r+b") as f:
        f.write(b"X")
    assert dest.read_bytes().startswith(b"layer")


def test_a_killed_swap_is_put_back(tmp_path: Path) -> None:
    from distbuild.staging import recover_swaps

    child = subprocess.Popen(["true"])
    child.wait()
    _, start, boot = scratch.owner_tag().split("-")
    dead = f"{child.pid}-{start}-{boot}-"
    moved = tmp_path / f".1.0.old-{dead}"  # killed between the two renames
    (moved / "oci").mkdir(parents=True)
    replaced = tmp_path / f".2.0.old-{dead}"  # killed while removing the old build
    replaced.mkdir()
    (tmp_path / "2.0").mkdir()
    recover_swaps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0", "2.0"]
    assert (tmp_path / "1.0/oci").is_dir()
