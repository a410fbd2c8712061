"""A full ``distbuild image`` of a hostile definition writes nothing outside its root.

The build runs in a private mount namespace where everything but the test's
directory and the package cache is read-only, and a tmpfs trap covers a host
path that the definition's links and ``..`` aim at.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, error_and_hint, image_args
from tests.support.sandbox import Outcome, run_sandboxed, trap_untouched

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.network]


def _project(tmp_path: Path, extra: str) -> tuple[Path, int]:
    proj = tmp_path / "proj"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, proj / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    toolbox = proj / "images/toolbox.yaml"
    text = toolbox.read_text()
    toolbox.write_text(text + extra)
    return proj, len(text.splitlines()) + 1  # the first line of ``extra``


def _build(
    tmp_path: Path, cache_dir: Path, proj: Path, trap: Path, timeout: float = 600
) -> tuple[Outcome, Path]:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "distbuild.cli.main"]
    argv += image_args(proj, out, "toolbox", "amd64", "9.9.9")
    env = {**os.environ, "TMPDIR": str(tmp_path), "DISTBUILD_CACHE": str(cache_dir)}
    seeds = {trap: {"victim": b"host file"}}
    result = run_sandboxed(
        argv, traps=seeds, writable=[tmp_path, cache_dir], timeout=timeout, cwd=REPO, env=env
    )
    assert not result.timed_out, result.stderr
    trap_untouched(result, seeds)
    return result, out


def _layer_names(build: Path) -> dict[str, tarfile.TarInfo]:
    layout = next(build.rglob("index.json")).parent
    names: dict[str, tarfile.TarInfo] = {}
    for blob in (layout / "blobs/sha256").iterdir():
        try:
            with tarfile.open(blob) as tar:
                names.update({m.name: m for m in tar.getmembers()})
        except tarfile.TarError:
            continue  # a config or manifest blob
    return names


def test_links_the_definition_makes_are_followed_inside(tmp_path: Path, cache_dir: Path) -> None:
    trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
    proj, _ = _project(tmp_path, f'symlinks:\n  /etc/evil: "{trap}"\noverlay: overlay\n')
    (proj / "images/overlay/etc/evil").mkdir(parents=True)
    (proj / "images/overlay/etc/evil/planted").write_text("image file\n")
    result, out = _build(tmp_path, cache_dir, proj, trap)
    assert result.returncode == 0, result.stderr
    names = _layer_names(out / "toolbox/9.9.9")
    planted = str(trap).lstrip("/") + "/planted"
    assert planted in names and names[planted].isreg()
    assert json.loads((out / "toolbox/9.9.9/build.json").read_text())


def test_dotdot_out_of_the_root_fails_at_its_line(tmp_path: Path, cache_dir: Path) -> None:
    trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
    proj, line = _project(tmp_path, f'files:\n  "{"/.." * 12}{trap}/victim": "pwned"\n')
    result, out = _build(tmp_path, cache_dir, proj, trap)
    assert result.returncode == 3, result.stderr
    error, _ = error_and_hint(result.stderr)
    assert f"toolbox.yaml:{line + 1}" in error and "leaves the image's root" in error
    assert not (out / "toolbox/9.9.9").exists()


def test_a_fifo_in_the_overlay_is_refused_not_a_hang(tmp_path: Path, cache_dir: Path) -> None:
    trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
    proj, line = _project(tmp_path, "overlay: overlay\n")
    (proj / "images/overlay/etc").mkdir(parents=True)
    os.mkfifo(proj / "images/overlay/etc/pipe")
    result, out = _build(tmp_path, cache_dir, proj, trap, timeout=240)  # it hung forever
    assert result.returncode == 3, result.stderr
    error, hint = error_and_hint(result.stderr)
    assert f"toolbox.yaml:{line}" in error and "overlay" in hint
    assert "FIFO" in error or "not a file, directory or symlink" in error
    assert not (out / "toolbox/9.9.9").exists()
