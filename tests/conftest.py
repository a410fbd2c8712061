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
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
BuildKey = tuple[str, ...]  # image, arch, version, epoch, *extra; or any name of a build
# Builds at once: CI has two cores, and a build is mostly one busy process
# (unpacking, gzip, Python), so two side by side take little more than one.
PARALLEL_BUILDS = 2


def build_key(
    image: str, arch: str, version: str = "1.0.0", epoch: int = EPOCH, extra: Sequence[str] = ()
) -> BuildKey:
    return (image, arch, version, str(epoch), *extra)


class Builds:
    """Builds of the session's project, each made once per arguments and shared.

    Call it for one build. :meth:`ahead` starts builds the session will need
    in the background (each a ``distbuild image`` process, two at a time), so
    that they run beside the tests before them (a TCG guest keeps one core
    busy, a build the other); :meth:`many` waits for several at once.
    """

    def __init__(
        self, project: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        self.project = project
        self.tmp = tmp_path_factory
        self.futures: dict[BuildKey, Future[Path]] = {}
        self.pool = ThreadPoolExecutor(PARALLEL_BUILDS, thread_name_prefix="build")
        self.procs: set[subprocess.Popen[str]] = set()
        self.guard = threading.Lock()  # mktemp, procs
        self.resolving = threading.Lock()  # one lock resolution (apt's index) at a time
        # Not a test's monkeypatched variables: the session's cache, the flag's epoch.
        self.env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        self.env["DISTBUILD_CACHE"] = str(cache)
        self.closed = False

    def __call__(
        self,
        image: str,
        arch: str,
        version: str = "1.0.0",
        epoch: int = EPOCH,
        extra: Sequence[str] = (),
    ) -> Path:
        return self.many(build_key(image, arch, version, epoch, extra))[0]

    def many(self, *keys: BuildKey) -> list[Path]:
        """The builds of ``keys`` (from :func:`build_key`), the missing ones side by side."""
        self.ahead(*keys)
        return [self.futures[k].result() for k in keys]

    def ahead(self, *keys: BuildKey) -> None:
        """Start the builds of ``keys`` that are not made or under way."""
        for key in keys:
            if key not in self.futures:
                self.later(key, lambda key=key: self._build(key))  # type: ignore[misc]

    def later(self, key: BuildKey, make: Callable[[], Path]) -> Future[Path]:
        """Run ``make`` in the background once, as the build named ``key``."""
        if key not in self.futures:
            self.futures[key] = self.pool.submit(make)
        return self.futures[key]

    def out_dir(self, name: str) -> Path:
        with self.guard:
            return self.tmp.mktemp(name)

    def process(self, argv: Sequence[str | os.PathLike[str]], what: str, log: Path) -> None:
        """Run the ``distbuild`` CLI, its output into ``log`` (killed if the session
        ends first)."""
        with log.open("w") as err, self.guard:
            assert not self.closed, f"{what}: the session is over"
            proc = subprocess.Popen(
                [sys.executable, "-m", "distbuild.cli.main", *map(str, argv)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                cwd=REPO, env=self.env, text=True,
            )  # fmt: skip
            self.procs.add(proc)
        try:
            rc = proc.wait(timeout=3600)
        finally:
            proc.kill()
            proc.wait()
            with self.guard:
                self.procs.discard(proc)
        assert rc == 0, f"{what} failed (exit {rc}):\n{log.read_text()[-6000:]}"

    def resolve(self, project: Path, image: str, arch: str) -> None:
        """Resolve the locks of ``image`` for ``arch`` in ``project`` unless it has them
        (so that builds side by side never resolve into one apt directory at once)."""
        with self.resolving:
            if arch != "all" and not (project / "images" / f"{image}.{arch}.lock.json").exists():
                argv = ["--project", project, "lock", "--image", image, "--arch", arch]
                log = self.out_dir(f"lock-{image}-{arch}") / "lock.log"
                self.process(argv, f"resolving {image} for {arch}", log)

    def _build(self, key: BuildKey) -> Path:
        image, arch = key[:2]
        self.resolve(self.project, image, arch)
        if arch == "all":
            with self.resolving:  # its arches' locks: resolved by this build
                return self._build_now(key)
        return self._build_now(key)

    def _build_now(self, key: BuildKey) -> Path:
        image, arch, version, epoch, *extra = key
        out = self.out_dir(f"out-{image}-{arch}")
        args = image_args(self.project, out, image, arch, version, int(epoch), extra)
        self.process(args, f"build of {image} {version} for {arch}", out.with_suffix(".log"))
        return out / image / version

    def close(self) -> None:
        """Stop what is under way (the session is over: nobody waits for it)."""
        for future in self.futures.values():
            future.cancel()
        with self.guard:
            self.closed = True
            for proc in self.procs:
                proc.kill()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def build_image(
    project: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Builds]:
    """Build (once per session and arguments) and return the build directory.

    ``extra``: more ``distbuild image`` arguments, e.g. the channel a node follows
    (``build_node`` in tests/e2e/conftest.py).
    """
    builds = Builds(project, cache_dir, tmp_path_factory)
    yield builds
    builds.close()


@pytest.fixture(scope="session")
def toolbox_all(build_image: Builder) -> Path:
    """The toolbox image for all three arches, one index."""
    return build_image("toolbox", "all")


def read_record(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "build.json").read_text())
