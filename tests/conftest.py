"""Shared fixtures: a private copy of the project, a shared package cache, builds.

Builds are expensive (the Debian archive, compression), so each image/arch
set is built once per session and shared read-only by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from distbuild.channel.admin import create_channel
from distbuild.channel.keys import KeyStore
from distbuild.cli.main import main
from tests.support.channel import channel, make_keys

# Property tests (tests/integration/test_hostile_inputs.py): reproducible example
# sets (derandomized, no example database), no per-example deadline (the
# sandbox has its own). 'ci' is the default; '--hypothesis-profile dev' runs few,
# 'explore' searches afresh.
settings.register_profile(
    "ci",
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    # Explaining a failure re-runs it a hundred times: minutes with a sandbox per run.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=20)
# Looking for new failures: a fresh random search each run, five times longer.
settings.register_profile(
    "explore", settings.get_profile("ci"), max_examples=1250, derandomize=False
)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
EPOCH = 1764201600


def run_cli(*args: str | os.PathLike[str]) -> int:
    return main([os.fspath(a) for a in args])


def image_args(
    project: Path,
    out: Path,
    image: str,
    arch: str,
    version: str = "1.0.0",
    epoch: int = EPOCH,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of a reproducible ``distbuild image`` build (after the program name)."""
    return [
        "--project",
        str(project),
        "image",
        "--arch",
        arch,
        "--image",
        image,
        "--out",
        str(out),
        "--release",
        version,
        "--source-date-epoch",
        str(epoch),
        *extra,
    ]


def error_and_hint(err: str) -> tuple[str, str]:
    """The first ``error:`` and ``hint:`` lines of a failed command's stderr (no traceback)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert errors and hints, err
    assert "Traceback" not in err, err
    return errors[0], hints[0]


def distbuild_process(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the ``distbuild`` CLI as its own process (signals, exit codes, stderr as a user sees)."""
    return subprocess.run(
        [sys.executable, "-m", "distbuild.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A refusal as the user must see it: error:/hint:, exit neither 0 nor 70, the needles."""
    err = proc.stderr
    assert proc.returncode not in (0, 70), err
    error_and_hint(err)
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


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


@dataclass(frozen=True)
class NodeChannels:
    """One channel per arch (``e2e-<arch>``) in one repository, with its keys.

    What a node built to follow one bakes in (the channel's URL, update settings)
    is the e2e tests' business: tests/e2e/conftest.py.
    """

    repo: Path
    keys: KeyStore

    @staticmethod
    def name(arch: str) -> str:
        return f"e2e-{arch}"

    def root_json(self, arch: str) -> Path:
        path = self.repo / self.name(arch) / "metadata" / "1.root.json"
        if not path.exists():
            create_channel(self.repo, channel(self.name(arch)), self.keys)
        return path


@pytest.fixture(scope="session")
def node_channels(tmp_path_factory: pytest.TempPathFactory) -> NodeChannels:
    directory = tmp_path_factory.mktemp("node-channels")
    return NodeChannels(directory / "repo", make_keys(directory / "keys"))


Builder = Callable[..., Path]


@pytest.fixture(scope="session")
def build_image(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builder]:
    """Build (once per session and arguments) and return the build directory.

    ``extra``: more ``distbuild image`` arguments, e.g. the channel a node follows
    (``build_node`` in tests/e2e/conftest.py).
    """
    done: dict[tuple[str, ...], Path] = {}

    def build(
        image: str,
        arch: str,
        version: str = "1.0.0",
        epoch: int = EPOCH,
        extra: Sequence[str] = (),
    ) -> Path:
        key = (image, arch, version, str(epoch), *extra)
        if key not in done:
            out = tmp_path_factory.mktemp(f"out-{image}-{arch}")
            rc = run_cli(*image_args(project, out, image, arch, version, epoch, extra))
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
