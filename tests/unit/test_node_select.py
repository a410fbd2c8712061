"""Which release a node picks: newest, open to its wave, not failed here, never older."""

from __future__ import annotations

from distbuild.core.releases import Release, ReleaseIndex, Wave, seed_from
from distbuild.node.tufclient import BOOT, INITRD, KERNEL, ROOT_IMAGE, file_roles, select

FILES = {"armv7": {"root.img": "root", "linux": "kernel", "initrd": "initrd", "boot.json": "boot"}}
T0 = 1_800_000_000


def index(*releases: Release) -> ReleaseIndex:
    idx = ReleaseIndex("stable")
    for r in releases:
        idx = idx.with_release(r)
    return idx


def rel(version: str, published: int = T0, waves: tuple[Wave, ...] = (), files=FILES) -> Release:  # type: ignore[no-untyped-def]
    return Release("node", version, published, waves, files)


def pick(idx: ReleaseIndex, current: str = "1.0", seed: int = 0, now: int = T0, failed=(), **kw):  # type: ignore[no-untyped-def]
    return select(
        idx,
        image="node",
        arch="armv7",
        current=current,
        seed=seed,
        now=now,
        failed=set(failed),
        **kw,
    )


def test_newest_newer_release_is_chosen() -> None:
    s = pick(index(rel("1.9"), rel("1.10"), rel("1.0")))
    assert s.release is not None and s.release.version == "1.10"


def test_up_to_date() -> None:
    s = pick(index(rel("1.0")))
    assert s.release is None and s.reason == "up to date (1.0)"


def test_other_arch_or_image_is_not_offered() -> None:
    s = pick(index(Release("node", "2.0", T0, (), {"amd64": FILES["armv7"]})))
    assert s.release is None and "no node release for armv7" in s.reason


def test_failed_versions_are_skipped() -> None:
    s = pick(index(rel("1.1"), rel("1.2")), failed={"1.2"})
    assert s.release is not None and s.release.version == "1.1"
    assert "1.2 failed here before" in s.notes[0]


def test_never_older_unless_allowed() -> None:
    s = pick(index(rel("0.9")))
    assert s.release is None and "older than the running 1.0" in s.reason
    s = pick(index(rel("0.9")), allow_downgrade=True)
    assert s.release is not None and s.downgrade


def test_waves_follow_the_seed() -> None:
    waves = (Wave(0, 205), Wave(3600, 1024), Wave(7200, 2048))
    idx = index(rel("1.1"), rel("1.2", published=T0 + 100, waves=waves))
    early, late = 100, 1500
    assert pick(idx, seed=early, now=T0 + 100).release.version == "1.2"  # type: ignore[union-attr]
    s = pick(idx, seed=late, now=T0 + 100)
    # Not in the first wave: the older open release is fine, and the wait is said.
    assert s.release is not None and s.release.version == "1.1"
    assert "1.2 reaches this node's wave (seed 1500) in 7200 s" in s.notes[0]
    assert pick(idx, seed=late, now=T0 + 7300).release.version == "1.2"  # type: ignore[union-attr]


def test_seed_is_stable_and_spread() -> None:
    assert seed_from("machine-1") == seed_from("machine-1\n")
    seeds = {seed_from(f"machine-{i}") for i in range(200)}
    assert len(seeds) > 150 and all(0 <= s < 2048 for s in seeds)


def test_file_roles_by_kind_then_name() -> None:
    assert file_roles(rel("1.1"), "armv7") == {
        ROOT_IMAGE: "root.img",
        KERNEL: "linux",
        INITRD: "initrd",
        BOOT: "boot.json",
    }
    by_name = {
        "armv7": {"root.img": "root", "vmlinuz": "root", "initrd.img": "root", "boot.json": "root"}
    }
    roles = file_roles(rel("1.1", files=by_name), "armv7")
    assert roles == {
        ROOT_IMAGE: "root.img",
        KERNEL: "vmlinuz",
        INITRD: "initrd.img",
        BOOT: "boot.json",
    }
    assert file_roles(rel("1.1"), "amd64") == {}
