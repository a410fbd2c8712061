"""The one resolver for paths inside a root: links as the target sees them, never the host's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distbuild.rootfs.rootpath import MAX_LINKS, RootDir, RootPathError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small root: merged /usr, absolute and relative links, a link out, a file."""
    r = tmp_path / "root"
    (r / "usr/bin").mkdir(parents=True)
    (r / "usr/share/doc").mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "tmp").mkdir()
    (r / "bin").symlink_to("usr/bin")  # relative
    (r / "etc/abs").symlink_to("/usr/share")  # absolute: re-rooted
    (r / "etc/out").symlink_to("/tmp")  # names the host's /tmp on the host
    (r / "etc/up").symlink_to("../../../../usr")  # '..' clamps at the root
    (r / "etc/file").write_text("plain")
    (r / "etc/tofile").symlink_to("/etc/file")
    (r / "etc/dangling").symlink_to("/nowhere/deeper")
    (r / "etc/loop1").symlink_to("loop2")
    (r / "etc/loop2").symlink_to("loop1")
    return r


def test_relative_and_absolute_links_resolve_inside(root: Path) -> None:
    r = RootDir(root)
    assert r.resolve("bin/x") == root / "usr/bin/x"
    assert r.resolve("/etc/abs/doc/f") == root / "usr/share/doc/f"
    assert r.resolve("etc/out/f") == root / "tmp/f"
    assert r.resolve("etc/up/bin") == root / "usr/bin"
    assert r.resolve("etc/tofile", follow=True) == root / "etc/file"
    assert r.resolve("etc/tofile") == root / "etc/tofile"  # the link itself


def test_writes_follow_root_links_not_host_links(root: Path, tmp_path: Path) -> None:
    r = RootDir(root)
    r.write_file("/etc/out/written", b"x")
    assert (root / "tmp/written").read_bytes() == b"x"
    r.mkdirs("/etc/out/made/deeper")
    assert (root / "tmp/made/deeper").is_dir()
    r.symlink("/etc/abs/doc/l", "/etc/passwd")
    assert os.readlink(root / "usr/share/doc/l") == "/etc/passwd"
    assert not Path("/tmp/written").exists()


def test_dotdot_in_the_path_that_leaves_the_root_is_an_error(root: Path) -> None:
    r = RootDir(root)
    for bad in ("/../x", "/etc/../../x", "usr/../../../tmp/x", "../../../../../../tmp/x"):
        with pytest.raises(RootPathError, match="leaves the root"):
            r.write_file(bad, b"x")
        with pytest.raises(RootPathError, match="leaves the root"):
            r.mkdirs(bad)
    r.write_file("/usr/../etc/ok", b"y")  # '..' that stays inside is fine
    assert (root / "etc/ok").read_bytes() == b"y"


def test_dotdot_after_a_link_is_relative_to_its_target(root: Path) -> None:
    # As the kernel does it: /etc/abs/.. is /usr, not /etc.
    assert RootDir(root).resolve("etc/abs/../bin/x") == root / "usr/bin/x"


def test_link_loops_end_in_an_error(root: Path) -> None:
    r = RootDir(root)
    with pytest.raises(RootPathError, match=f"more than {MAX_LINKS} symlinks"):
        r.write_file("/etc/loop1/x", b"")
    with pytest.raises(RootPathError, match="symlinks"):
        r.read_bytes("/etc/loop1")


def test_dangling_links_are_created_inside(root: Path) -> None:
    r = RootDir(root)
    r.write_file("/etc/dangling/f", b"z")
    assert (root / "nowhere/deeper/f").read_bytes() == b"z"
    with pytest.raises(RootPathError, match="does not exist"):
        r.read_bytes("/etc/abs/nothing/here")


def test_a_file_where_a_directory_is_needed(root: Path) -> None:
    r = RootDir(root)
    for path in ("/etc/file/x", "/etc/tofile/x"):
        with pytest.raises(RootPathError, match="is not a directory"):
            r.write_file(path, b"")
        with pytest.raises(RootPathError, match="is not a directory"):
            r.mkdirs(path)


def test_the_last_link_is_replaced_not_followed(root: Path) -> None:
    r = RootDir(root)
    r.write_file("/etc/tofile", b"new", mode=0o600)
    assert (root / "etc/file").read_text() == "plain"
    assert not (root / "etc/tofile").is_symlink()
    assert (root / "etc/tofile").stat().st_mode & 0o777 == 0o600
    r.symlink("/etc/out", "/elsewhere")
    assert os.readlink(root / "etc/out") == "/elsewhere"
    with pytest.raises(RootPathError, match="is a directory"):
        r.write_file("/usr", b"")


def test_make_dir_sets_owner_and_mode(root: Path) -> None:
    r = RootDir(root)
    assert r.make_dir("/etc/out/home/u", 0o750, 1234, 4321)
    st = (root / "tmp/home/u").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, 0o750)
    assert not r.make_dir("/etc/out/home/u", 0o700, 0, 0)
    with pytest.raises(RootPathError, match="not a directory"):
        r.make_dir("/etc/file", 0o700, 0, 0)


def test_remove_follows_parent_links_only(root: Path) -> None:
    r = RootDir(root)
    (root / "usr/share/doc/a/b").mkdir(parents=True)
    assert r.remove("/etc/abs/doc/a")
    assert not (root / "usr/share/doc/a").exists()
    assert r.remove("/etc/out")  # the link, never the host's /tmp
    assert not (root / "etc/out").is_symlink() and Path("/tmp").is_dir()
    assert not r.remove("/etc/missing/x")
    with pytest.raises(RootPathError, match="leaves the root"):
        r.remove("/../tmp")


def test_hardlink_and_read(root: Path) -> None:
    r = RootDir(root)
    r.hardlink("etc/file", "bin/hard")
    assert (root / "usr/bin/hard").stat().st_ino == (root / "etc/file").stat().st_ino
    assert r.read_bytes("/etc/tofile") == b"plain"


def test_special_files_are_not_read(root: Path) -> None:
    os.mkfifo(root / "etc/fifo")
    with pytest.raises(RootPathError, match="not a regular file"):
        RootDir(root).read_bytes("/etc/fifo")  # O_NONBLOCK: returns, never hangs


def test_walk_does_not_follow_links(root: Path) -> None:
    seen = {rel: (sorted(d), sorted(f)) for rel, d, f, _ in RootDir(root).walk("/etc/abs")}
    assert seen == {"usr/share": (["doc"], []), "usr/share/doc": ([], [])}
    names = {n for _, d, f, _ in RootDir(root).walk() for n in d + f}
    assert "out" in names and "written" not in names


def test_names_the_kernel_refuses_are_clean_errors(root: Path) -> None:
    with pytest.raises(RootPathError, match="too long"):
        RootDir(root).write_file("/etc/" + "a" * 300, b"")
    # Component by component, a path has no PATH_MAX: deep paths are fine.
    RootDir(root).mkdirs("/" + "/".join(["b" * 255] * 20))


@pytest.mark.root
def test_a_directory_swapped_for_a_link_mid_walk_is_not_followed(root: Path) -> None:
    """The race a checked-then-used host path loses: a link replaces a checked directory."""
    import secrets

    from distbuild.rootfs import rootpath
    from tests.support.sandbox import run_sandboxed, trap_untouched

    trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
    (root / "etc/swapped").mkdir()
    real_stat = os.stat

    def stat_then_swap(name: str, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(name, *args, **kwargs)  # type: ignore[arg-type]
        if name == "swapped" and (root / "etc/swapped").is_dir():
            (root / "etc/swapped").rename(root / "etc/was-swapped")
            (root / "etc/swapped").symlink_to(trap)
        return st

    def write() -> None:
        rootpath.os.stat = stat_then_swap  # type: ignore[attr-defined]
        RootDir(root).write_file("/etc/swapped/x", b"redirected?")

    seeds = {trap: {"victim": b"host file"}}
    out = run_sandboxed(write, traps=seeds)
    trap_untouched(out, seeds)
    assert isinstance(out.error, RootPathError), out.stderr
    assert (root / "etc/swapped").is_symlink()  # the swap happened; the write did not follow


def test_the_parent_cache_forgets_when_a_link_changes_meaning(root: Path) -> None:
    with RootDir(root, cache=True) as r:
        r.write_file("/etc/abs/doc/one", b"1")  # caches etc/abs/doc -> usr/share/doc
        r.symlink("/etc/abs", "/tmp")  # etc/abs now means /tmp
        r.write_file("/etc/abs/two", b"2")
        r.remove("/etc/abs")
        r.mkdirs("/etc/abs/doc")  # a real directory this time
        r.write_file("/etc/abs/doc/three", b"3")
    assert (root / "usr/share/doc/one").read_bytes() == b"1"
    assert (root / "tmp/two").read_bytes() == b"2"
    assert (root / "etc/abs/doc/three").read_bytes() == b"3"
    assert not (root / "usr/share/doc/three").exists()
