"""Shared fixtures: a private copy of the project, a shared package cache, builds.

Builds are expensive (the Debian archive, compression), so each image/arch
set is built once per session and shared read-only by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from distbuild.cli.main import main

REPO = Path(__file__).resolve().parent.parent
EPOCH = 1764201600


def run_cli(*args: str | os.PathLike[str]) -> int:
    return main([os.fspath(a) for a in args])


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The package cache, shared across sessions (DISTBUILD_CACHE or ~/.cache)."""
    path = Path(os.environ.get("DISTBUILD_CACHE") or Path.home() / ".cache" / "distbuild")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["DISTBUILD_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A copy of recipes/ and images/ so tests write locks there, not in the checkout."""
    dest = tmp_path_factory.mktemp("project")
    for sub in ("recipes", "images", "channels"):
        if (REPO / sub).is_dir():
            shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return dest


Builder = Callable[..., Path]


@pytest.fixture(scope="session")
def build_image(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builder]:
    """Build (once per session and arguments) and return the build directory."""
    done: dict[tuple[str, ...], Path] = {}

    def build(image: str, arch: str, version: str = "1.0.0", epoch: int = EPOCH) -> Path:
        key = (image, arch, version, str(epoch))
        if key not in done:
            out = tmp_path_factory.mktemp(f"out-{image}-{arch}")
            rc = run_cli(
                "--project",
                project,
                "image",
                "--arch",
                arch,
                "--image",
                image,
                "--out",
                out,
                "--version",
                version,
                "--source-date-epoch",
                str(epoch),
            )
            assert rc == 0, f"build of {image} for {arch} failed"
            done[key] = out / image / version
        return done[key]

    yield build


@pytest.fixture(scope="session")
def toolbox_all(build_image: Builder) -> Path:
    """The toolbox image for all three arches, one index."""
    return build_image("toolbox", "all")


def read_record(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "build.json").read_text())
