"""Rootfs pieces that need no archive: sources, merged-/usr mapping, busybox, layers."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from distbuild.oci.layer import write_layer
from distbuild.rootfs.customise import busybox_applets
from distbuild.rootfs.extract import usr_path
from distbuild.rootfs.rootpath import RootDir
from distbuild.rootfs.sources import host_sources


def test_host_sources_parse_both_formats(tmp_path: Path) -> None:
    etc = tmp_path / "etc/apt/sources.list.d"
    etc.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main contrib\n"
    )
    (etc / "x.sources").write_text(
        "Types: deb deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb\nURIs: http://other.invalid/x\nSuites: nodistro\nComponents: main\nEnabled: no\n"
    )
    got = host_sources(tmp_path)
    assert [(s.suite, s.signed_by) for s in got] == [
        ("bookworm", "/k.gpg"),
        ("bookworm", "/usr/share/keyrings/k.gpg"),
        ("bookworm-updates", "/usr/share/keyrings/k.gpg"),
    ]
    assert got[0].components == ("main", "contrib")


def test_usr_merge_mapping() -> None:
    assert usr_path("./bin/busybox") == "usr/bin/busybox"
    assert usr_path("./lib64/ld.so") == "usr/lib64/ld.so"
    assert usr_path("./etc/passwd") == "etc/passwd"
    assert usr_path("./") == ""


def test_root_resolve_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    (root / "etc/escape").symlink_to("/")  # absolute links resolve inside the root
    (root / "tmp").mkdir()
    r = RootDir(root)
    assert r.resolve("bin/x") == root / "usr/bin/x"
    assert r.resolve("etc/escape/tmp/f") == root / "tmp/f"


def test_busybox_applets_from_name_table() -> None:
    blob = b"\x7fELF junk\x00[\x00[[\x00ash\x00ls\x00uname\x00\x00more junk"
    assert busybox_applets(blob) == ["[", "[[", "ash", "ls", "uname"]


def _tree(root: Path, mtime: int) -> None:
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/file").write_text("hello")
    (root / "a/link").symlink_to("b/file")
    os.link(root / "a/b/file", root / "a/hard")
    (root / "z").write_bytes(os.urandom(0) + b"x" * 5000)
    for p in [root / "a/b/file", root / "z", root / "a/b", root / "a"]:
        os.utime(p, (mtime, mtime))


def test_layers_are_deterministic(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _tree(one, 1000)
    _tree(two, 2_000_000_000)  # other mtimes, other inode numbers, same content
    a = write_layer(one, tmp_path / "a.tgz", epoch=1764201600)
    b = write_layer(two, tmp_path / "b.tgz", epoch=1764201600)
    assert (a.digest, a.diff_id) == (b.digest, b.diff_id)
    with gzip.open(a.path) as g:
        header = (tmp_path / "a.tgz").read_bytes()[:10]
        assert header[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
        with tarfile.open(fileobj=g) as tar:
            members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert all(m.mtime == 1764201600 and m.uname == "" for m in members)
    hard = next(m for m in members if m.name in ("a/hard", "a/b/file") and m.islnk())
    assert hard.linkname in ("a/b/file", "a/hard")
