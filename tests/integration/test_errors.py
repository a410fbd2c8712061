"""Bad inputs end in 'error:' and 'hint:', a non-zero exit, no traceback, nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NodeChannels, assert_clean_error, image_args
from tests.conftest import distbuild_process as distbuild

pytestmark = pytest.mark.slow


@pytest.fixture
def proj(tmp_path: Path, project: Path, toolbox_all: Path) -> Path:
    """A private project copy per test, carrying the session's locks."""
    dest = tmp_path / "proj"
    shutil.copytree(project, dest)
    return dest


def build(
    proj: Path,
    out: Path,
    *extra: str,
    image: str = "toolbox",
    arch: str = "amd64",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return distbuild(*image_args(proj, out, image, arch, "9.9.9", extra=extra), env=env)


def nothing_written(out: Path) -> None:
    assert not (out / "toolbox" / "9.9.9").exists()
    leftovers = [p for p in out.rglob("*")] if out.exists() else []
    assert all(p.is_dir() for p in leftovers), leftovers


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.network
def test_unknown_key(proj: Path, tmp_path: Path) -> None:
    edit(proj / "images/toolbox.yaml", "busybox_links: true", "busybox_linkz: true")
    err = assert_clean_error(
        build(proj, tmp_path / "out"), "toolbox.yaml:", "busybox_linkz", "unknown key"
    )
    assert "known keys" in err
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_wrong_type(proj: Path, tmp_path: Path) -> None:
    edit(proj / "recipes/amd64.yaml", "tries: 3", "tries: three")
    assert_clean_error(build(proj, tmp_path / "out"), "amd64.yaml:", "boot.tries", "integer")
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_unknown_arch(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(build(proj, tmp_path / "out", arch="sparc"), "unknown architecture 'sparc'")


@pytest.mark.network
def test_unknown_image(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(
        build(proj, tmp_path / "out", image="nosuch"), "unknown image 'nosuch'", "toolbox"
    )


@pytest.mark.network
def test_unparsable_yaml(proj: Path, tmp_path: Path) -> None:
    edit(proj / "images/toolbox.yaml", "outputs: [oci]", "outputs: [oci")
    assert_clean_error(build(proj, tmp_path / "out"), "invalid YAML", "toolbox.yaml:")


@pytest.mark.network
def test_jinja_error(proj: Path, tmp_path: Path) -> None:
    edit(proj / "images/toolbox.yaml", "({{ arch.name }})", "({{ arch.name | nosuchfilter }})")
    assert_clean_error(build(proj, tmp_path / "out"), "toolbox.yaml:", "template")


@pytest.mark.network
def test_package_not_in_archive(proj: Path, tmp_path: Path) -> None:
    edit(
        proj / "images/toolbox.yaml",
        "  - ca-certificates",
        "  - ca-certificates\n  - no-such-package-distbuild",
    )
    err = assert_clean_error(
        build(proj, tmp_path / "out"), "no-such-package-distbuild", "not in the archive"
    )
    assert "toolbox.yaml:" in err and "packages[2]" in err
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_lock_hash_mismatch(proj: Path, tmp_path: Path) -> None:
    lock_file = proj / "images/toolbox.amd64.lock.json"
    lock = json.loads(lock_file.read_text())
    pkg = next(p for p in lock["packages"] if p["name"] == "busybox")
    pkg["sha256"] = "0" * 64  # the archive's .deb no longer matches the lock
    lock_file.write_text(json.dumps(lock))
    err = assert_clean_error(build(proj, tmp_path / "out"), "busybox", "sha256 mismatch")
    assert "distbuild lock" in err
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_changed_cached_deb_is_not_extracted(proj: Path, tmp_path: Path, cache_dir: Path) -> None:
    lock = json.loads((proj / "images/toolbox.amd64.lock.json").read_text())
    pkg = next(p for p in lock["packages"] if p["name"] == "busybox")
    cached = cache_dir / "debs" / f"{pkg['sha256']}.deb"
    original = cached.read_bytes()
    env = {"DISTBUILD_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache/debs").mkdir(parents=True)
    for p in lock["packages"]:
        shutil.copy(cache_dir / "debs" / f"{p['sha256']}.deb", tmp_path / "cache/debs")
    damaged = tmp_path / "cache/debs" / cached.name
    damaged.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert_clean_error(build(proj, tmp_path / "out", env=env), "busybox", "cached .deb")
    assert not damaged.exists(), "a damaged cache entry is dropped"
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_unreachable_mirror(proj: Path, tmp_path: Path) -> None:
    for lock in (proj / "images").glob("*.lock.json"):
        lock.unlink()
    env = {"DISTBUILD_CACHE": str(tmp_path / "cache")}
    err = assert_clean_error(
        build(proj, tmp_path / "out", "--mirror", "http://127.0.0.1:9/debian", env=env),
        "could not fetch the package index",
        "127.0.0.1:9",
    )
    assert "--mirror" in err
    nothing_written(tmp_path / "out")


@pytest.mark.network
def test_unwritable_output_dir(proj: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_clean_error(build(proj, blocker / "out"), "cannot write to the output directory")


@pytest.mark.network
def test_stale_lock(proj: Path, tmp_path: Path) -> None:
    edit(proj / "images/toolbox.yaml", "  - ca-certificates", "  - ca-certificates\n  - zstd")
    assert_clean_error(build(proj, tmp_path / "out", "--locked"), "stale", "distbuild lock")


def test_cli_usage_error_is_clean(tmp_path: Path) -> None:
    assert_clean_error(
        distbuild("image", "--arch", "amd64", "--compression-level", "42"), "compression-level"
    )


@pytest.mark.network
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--channel-url", "http://updates.test"], ["--channel-url and --trust-root go together"]),
        (
            [
                "--trust-root",
                "ROOT",
                "--channel-url",
                "http://u.test",
                "--update-setting",
                "reboot=sometimes",
            ],
            ["reboot: must be one of immediate, kured, fleetlock, never"],
        ),
        (
            [
                "--trust-root",
                "ROOT",
                "--channel-url",
                "http://u.test",
                "--update-setting",
                "poll_intervall=1h",
            ],
            ["unknown key 'poll_intervall'", "known keys"],
        ),
        (
            [
                "--trust-root",
                "ROOT",
                "--channel-url",
                "http://u.test",
                "--update-setting",
                "reboot=fleetlock",
            ],
            ["fleetlock needs fleetlock_url"],
        ),
        (
            ["--trust-root", "ROOT", "--channel-url", "http://u.test", "--update-setting", "tries"],
            ["is not KEY=VALUE"],
        ),
        (
            ["--trust-root", "missing.json", "--channel-url", "http://u.test"],
            ["trust root", "is not a file"],
        ),
        (["--trust-root", "NOT_ROOT", "--channel-url", "http://u.test"], ["not TUF root metadata"]),
    ],
)
def test_bad_updater_settings_fail_the_node_build(
    proj: Path, tmp_path: Path, node_channels: NodeChannels, extra: list[str], needles: list[str]
) -> None:
    """What a node would choke on is refused at build time, before anything is built."""
    not_root = tmp_path / "timestamp.json"
    not_root.write_text(json.dumps({"signed": {"_type": "timestamp"}}))
    subst = {"ROOT": str(node_channels.root_json("amd64")), "NOT_ROOT": str(not_root)}
    args = [subst.get(a, a) for a in extra]
    out = tmp_path / "out"
    assert_clean_error(build(proj, out, *args, image="node"), *needles)
    assert not (out / "node").exists()
