"""The build trusts nothing it left behind: a checked layer cache, clean-up after
signals and kills, and clear errors for a full disk or a path in the way."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EPOCH, REPO, Builder, error_and_hint, image_args, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture
def proj(tmp_path: Path, project: Path, build_image: Builder) -> Path:
    """A private project copy carrying the session's toolbox lock for amd64."""
    build_image("toolbox", "amd64")
    dest = tmp_path / "proj"
    shutil.copytree(project, dest)
    return dest


@pytest.fixture
def cache(tmp_path: Path, cache_dir: Path) -> Path:
    """A private cache (own layers and work directories) sharing the package downloads."""
    path = tmp_path / "cache"
    path.mkdir()
    for sub in ("debs", "apt"):
        (cache_dir / sub).mkdir(exist_ok=True)
        (path / sub).symlink_to(cache_dir / sub)
    return path


def start(
    proj: Path, out: Path, cache: Path, epoch: int = EPOCH, extra: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    argv = image_args(proj, out, "toolbox", "amd64", "9.9.9", epoch, extra)
    return subprocess.Popen(
        [sys.executable, "-m", "distbuild.cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "DISTBUILD_CACHE": str(cache)},
        # A build started in the background of a non-interactive shell (as CI
        # may run the suite) inherits SIGINT ignored, and rightly keeps ignoring
        # it; this build is a foreground one, as a user's Ctrl-C would reach.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def build(proj: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = start(proj, out, cache, extra=extra)
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def layer_blob(out: Path) -> tuple[Path, str]:
    """The toolbox build's layer blob in ``out`` and its digest."""
    record = json.loads((out / "toolbox/9.9.9/build.json").read_text())
    oci = next(a for a in record["artifacts"] if a["kind"] == "oci")
    manifest = json.loads((out / "toolbox/9.9.9" / oci["path"]).read_text())
    digest = manifest["layers"][0]["digest"].split(":")[1]
    return out / "toolbox/9.9.9/oci/blobs/sha256" / digest, digest


def cache_entry(cache: Path) -> Path:
    (entry,) = (cache / "layers").iterdir()
    return entry


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_cached_layer_is_rebuilt_and_never_shared(
    proj: Path, cache: Path, tmp_path: Path
) -> None:
    first = build(proj, tmp_path / "a", cache)
    assert first.returncode == 0, first.stderr
    blob_a, digest = layer_blob(tmp_path / "a")
    cached = cache_entry(cache) / "layer.tar.gz"
    assert sha256(cached) == digest
    # The output is a file of its own, not a hard link into the cache.
    assert blob_a.stat().st_ino != cached.stat().st_ino
    assert blob_a.stat().st_nlink == 1 and cached.stat().st_nlink == 1

    with cached.open("r+b") as f:  # a flipped byte, in place
        f.seek(cached.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    second = build(proj, tmp_path / "b", cache)
    assert second.returncode == 0, second.stderr
    assert "warning: the cached layer" in second.stderr and "damaged" in second.stderr
    blob_b, digest_b = layer_blob(tmp_path / "b")
    assert digest_b == digest and sha256(blob_b) == digest
    assert sha256(blob_a) == digest  # the earlier build was not touched
    assert sha256(cached) == digest  # the entry was rebuilt


def test_empty_layer_json_is_rebuilt(proj: Path, cache: Path, tmp_path: Path) -> None:
    assert build(proj, tmp_path / "a", cache).returncode == 0
    meta = cache_entry(cache) / "layer.json"
    meta.write_text("")  # what a crash between create and write leaves
    again = build(proj, tmp_path / "b", cache)
    assert again.returncode == 0, again.stderr
    assert "warning: the cached layer" in again.stderr
    _, digest = layer_blob(tmp_path / "b")
    assert json.loads(meta.read_text())["digest"] == f"sha256:{digest}"


def _leftovers(out: Path, cache: Path, pid: int) -> list[Path]:
    tag = f"{pid}-"
    partial = [p for p in (out / "toolbox").glob(".*.partial-*") if tag in p.name]
    work = [p for p in cache.glob("work-*") if p.name.startswith(f"work-{tag}")]
    return partial + work


def _kill_mid_build(proj: Path, out: Path, cache: Path, signum: int) -> subprocess.Popen[str]:
    """Start a build that must write its layer, and signal it once it is staging."""
    proc = start(proj, out, cache, epoch=EPOCH + 17)
    deadline = time.monotonic() + 300
    while not list((out / "toolbox").glob(".9.9.9.partial-*")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the build never started staging"
        time.sleep(0.05)
    time.sleep(1.0)  # into unpacking or compressing the layer
    assert proc.poll() is None, "the build ended before it could be interrupted"
    assert _leftovers(out, cache, proc.pid), "no staging/work directory named after the build"
    proc.send_signal(signum)
    proc.wait(timeout=120)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_staging_and_work(
    proj: Path, cache: Path, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "out"
    proc = _kill_mid_build(proj, out, cache, signum)
    _, err = proc.communicate()
    assert proc.returncode == 128 + signum, err
    assert "error: interrupted" in err and "Traceback" not in err, err
    assert _leftovers(out, cache, proc.pid) == []
    assert not (out / "toolbox/9.9.9").exists()
    assert not list((cache / "layers").glob("*/layer.json"))


def test_next_build_reaps_a_killed_builds_leftovers(
    proj: Path, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    killed = _kill_mid_build(proj, out, cache, signal.SIGKILL)
    killed.communicate()
    left = _leftovers(out, cache, killed.pid)
    assert len(left) == 2, left  # the staging and the work directory
    after = build(proj, out, cache)
    assert after.returncode == 0, after.stderr
    assert all(not p.exists() for p in left), left
    assert "left by a build that was killed" in after.stderr


def test_full_disk_is_an_error_naming_the_directory(
    proj: Path, cache: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    assert build(proj, tmp_path / "warm", cache).returncode == 0  # the layer is cached
    out = tmp_path / "small"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", out], check=True)
    try:
        proc = build(proj, out, cache)
        assert proc.returncode not in (0, 70), proc.stderr
        error, hint = error_and_hint(proc.stderr)
        assert "no space left" in error and str(out) in error, error
        assert "free some space" in hint, hint
        leftovers = [p for p in out.rglob("*") if not p.is_dir()]
        assert leftovers == [] and not (out / "toolbox/9.9.9").exists(), leftovers
    finally:
        subprocess.run(["umount", out], check=True)


def test_file_where_the_image_directory_goes(proj: Path, cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "toolbox").write_text("not a directory\n")
    proc = build(proj, out, cache)
    assert proc.returncode not in (0, 70), proc.stderr
    error, hint = error_and_hint(proc.stderr)
    assert str(out / "toolbox") in error and "is in the way" in error, error
    assert "--out" in hint
    assert (out / "toolbox").read_text() == "not a directory\n"
    assert not list(cache.glob("work-*"))


def test_nul_in_a_path_argument(
    proj: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_cli(*image_args(proj, Path(f"{tmp_path}/o\0ut"), "toolbox", "amd64"))
    assert rc not in (0, 70)
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "NUL" in error and "NUL" in hint
    assert list(tmp_path.iterdir()) == [proj]
