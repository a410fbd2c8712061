"""Property tests: hostile definitions, build records and argv never act outside their root.

Hypothesis composes inputs from hostile pieces (tests/hostile_strategies.py)
and runs each through loading and customisation of a small synthetic root,
through the CLI's argument checks, and (marked slow) through full builds of a
one-package image, each in a fresh process inside one private mount namespace
(tests/hostile_support.py) where everything but the output and cache
directories is read-only and TRAP is a tmpfs that must stay empty. Each run
must end in success or ``error:``/``hint:``: never exit 70, a traceback, a
hang past its deadline, an attempted write outside (EROFS) or a trap written.

The example counts come from the hypothesis profile (tests/conftest.py):
``ci`` (the default) runs 260 + 260 examples and 26 builds, ``dev`` a few.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distbuild.arch import ARCHES
from distbuild.cli.main import main
from distbuild.errors import DistbuildError
from distbuild.model.image import load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs.customise import customise
from tests import hostile_strategies as hs
from tests.channel_support import make_keys
from tests.conftest import EPOCH, REPO
from tests.hostile_support import Sandbox, check_outcome

pytestmark = pytest.mark.root
TRAP = Path(hs.TRAP)
BUILDS = max(1, settings().max_examples // 10)


@dataclass(frozen=True)
class Hostile:
    """The session's directories and its namespaced worker."""

    project: Path  # read-only in the namespace; the test writes each example's files here
    template: Path  # the synthetic root (read-only in the namespace)
    out: Path  # writable
    cache: Path  # writable: DISTBUILD_CACHE, TMPDIR, the roots being customised
    sandbox: Sandbox


# --- jobs: run in a fresh process inside the namespace ------------------------------


def _as_cli(fn: object, *args: object) -> int:
    """What cli/main.py does with an exception, for jobs that call the library."""
    try:
        fn(*args)  # type: ignore[operator]
    except DistbuildError as e:
        print(f"error: {e.message}\nhint: {e.hint}")
        return e.exit_code
    return 0


def _load_and_customise(project: Path, name: str, template: Path, root: Path) -> None:
    recipe = load_recipe(project, ARCHES["amd64"])
    image = load_image(project, name, recipe)
    shutil.copytree(template, root, symlinks=True)
    customise(root, image, {"VERSION": "1.0.0", "ID": "distbuild"})


def customise_job(project: Path, name: str, template: Path, root: Path) -> int:
    return _as_cli(_load_and_customise, project, name, template, root)


def cli_job(argv: list[str]) -> int:
    return main(argv)


# --- the session's world -------------------------------------------------------------


def _synthetic_root(root: Path) -> None:
    """A few directories and the kinds of links a Debian root ships."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc/alternatives", "var/lib", "tmp", "root"):
        (root / d).mkdir(parents=True)
    (root / "run").mkdir()
    for name, target in {
        "bin": "usr/bin",
        "sbin": "usr/sbin",
        "lib": "usr/lib",
        "var/run": "/run",
        "etc/alternatives/pager": f"{TRAP}/pager",
        "usr/bin/pager": "/etc/alternatives/pager",
        "etc/trap": str(TRAP),
        "etc/uptrap": f"{hs.UP}{hs.TRAP[1:]}",
        "etc/loop": "loop",
        "etc/dangling": "/nonexistent/dir",
    }.items():
        (root / name).symlink_to(target)
    (root / "etc/os-release").write_text("ID=synthetic\n")
    (root / "usr/bin/sh").write_bytes(b"\x7fELF")


def _project(project: Path, out: Path) -> None:
    shutil.copytree(REPO / "recipes", project / "recipes")
    shutil.copytree(REPO / "channels", project / "channels")
    images = project / "images"
    (images / "include").mkdir(parents=True)
    for name in ("tiny", "nolock", "fuzz"):
        (images / f"{name}.yaml").write_text(f"name: {name}\npackages: [busybox]\n")
    (images / "include/ok.yaml").write_text("directories: [/srv/included]\n")
    (images / "include/loop.yaml").write_text("include: loop.yaml\n")
    (images / "include/link-out.yaml").symlink_to("/etc/hostname")
    os.mkfifo(images / "fifo")
    overlays = project / "overlays"
    (overlays / "plain/etc").mkdir(parents=True)
    (overlays / "plain/etc/overlaid").write_text("x\n")
    (overlays / "links").mkdir()
    (overlays / "links/abs").symlink_to(f"{TRAP}/overlay-abs")
    (overlays / "links/rel").symlink_to(hs.UP + "etc")
    (overlays / "fifo").mkdir()
    os.mkfifo(overlays / "fifo/pipe")
    (overlays / "outside-link").symlink_to("/etc")
    record = project / "records/build"
    (record / "amd64").mkdir(parents=True)
    (record / "amd64/root.img").write_bytes(b"r" * 5)
    (record / "amd64/packages.lock.json").write_text("{}")
    (record / "amd64/link-out").symlink_to("/etc/shadow")
    os.mkfifo(record / "amd64/fifo")
    make_keys(project / "keys")
    (project / "disk.img").write_bytes(b"\0" * 65536)


def _private_cache(cache: Path) -> None:
    """The shared package cache's .debs (hard links) and amd64 indexes, nothing else."""
    shared = Path(os.environ.get("DISTBUILD_CACHE") or Path.home() / ".cache/distbuild")
    (cache / "debs").mkdir(parents=True)
    for deb in (shared / "debs").glob("*.deb"):
        os.link(deb, cache / "debs" / deb.name)
    for index in (shared / "apt").glob("*-amd64-*"):
        shutil.copytree(index, cache / "apt" / index.name)
    (cache / "tmp").mkdir()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = tmp_path_factory.mktemp("hostile")
    project, template, out, cache = (base / n for n in ("project", "template", "out", "cache"))
    out.mkdir()
    _project(project, out)
    _synthetic_root(template)
    _private_cache(cache)
    env = {
        "DISTBUILD_CACHE": str(cache),
        "TMPDIR": str(cache / "tmp"),
        "DOCKER_HOST": f"unix://{base}/no-docker.sock",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    os.environ["DISTBUILD_CACHE"] = str(cache)
    # The one-package image's lock, resolved once outside the namespace.
    rc = main(["--project", str(project), "lock", "--arch", "amd64", "--image", "tiny"])
    assert rc == 0
    sandbox = Sandbox([out, cache], [TRAP], env, cache / "tmp" / "job.log")
    try:
        yield Hostile(project, template, out, cache, sandbox)
    finally:
        sandbox.close()


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


# --- definitions: loading and customisation --------------------------------------------


@settings(max_examples=settings().max_examples + 10)
@given(text=hs.definition("fuzz"))
def test_definitions_load_and_customise_inside_the_root(hostile: Hostile, text: str) -> None:
    (hostile.project / "images/fuzz.yaml").write_text(text)
    jobs = _fresh(hostile.cache / "jobs")
    result = hostile.sandbox.run(
        customise_job, hostile.project, "fuzz", hostile.template, jobs / "root", timeout=15
    )
    check_outcome(result, f"images/fuzz.yaml:\n{text}")
    left = sorted(p.name for p in jobs.iterdir())
    assert left in ([], ["root"]), f"wrote next to the root: {left}\n{text}"


# --- the command line -------------------------------------------------------------------


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    """One command with hostile names, numbers and paths; {X} are the session's paths."""
    name, version, arch = (
        draw(hs.one(hs.CLI_NAMES)),
        draw(hs.one(hs.VERSIONS)),
        draw(hs.one(hs.ARCHES)),
    )
    build = draw(st.sampled_from(["{RECORD}", "/", "/etc", "{PROJECT}/images/fifo", "{OUT}/none"]))
    commands = [
        [
            "image",
            "--arch",
            arch,
            "--image",
            name if name != "tiny" else "nolock",
            "--out",
            "{OUT}/img",
            "--version",
            version,
            "--locked",
            "--source-date-epoch",
            draw(hs.one(hs.EPOCHS)),
            "--compression-level",
            draw(st.sampled_from(["1", "0", "10", "-1"])),
        ],
        ["lock", "--arch", arch, "--image", name, "--mirror", "http://127.0.0.1:9/"],
        ["merge", build, build, "--out", "{OUT}/merged"],
        [
            "push",
            build,
            draw(hs.ref()),
            "--retries",
            draw(st.sampled_from(["0", "-1", "21", "9" * 20])),
            "--chunk-size",
            draw(st.sampled_from(["5M", "0", "-1", "1", "9" * 30 + "T", "x"])),
        ],
        [
            "load",
            build,
            "--platform",
            draw(hs.one(hs.PLATFORMS)),
            "--tag",
            draw(hs.one(hs.TAGS_CLI)),
        ],
        [
            "publish",
            build,
            "--channel",
            draw(hs.one(hs.CHANNELS)),
            "--repo",
            "{OUT}/repo",
            "--keys",
            "{PROJECT}/keys",
        ],
        ["channel", "show", "--channel", draw(hs.one(hs.CHANNELS)), "--repo", "{OUT}/repo"],
        [
            "disk",
            "status",
            draw(st.sampled_from(["{DISK}", "/dev/zero", "{PROJECT}/images/fifo", "/"])),
            "--arch",
            arch,
        ],
        [
            "disk",
            draw(st.sampled_from(["set-slot", "mark-good", "mark-unbootable"])),
            "{DISK}",
            "--arch",
            arch,
            "--slot",
            draw(hs.one(["a", "b", "c", "A", "../a"])),
        ],
        ["recipes", "check"],
    ]
    return ["--project", "{PROJECT}", *draw(st.sampled_from(commands))]


@settings(max_examples=settings().max_examples + 10)
@given(args=argv(), record=hs.build_record())
def test_cli_arguments_are_refused_clearly(hostile: Hostile, args: list[str], record: dict) -> None:  # type: ignore[type-arg]
    (hostile.project / "records/build/build.json").write_text(json.dumps(record))
    out = _fresh(hostile.out / "cli")
    shutil.copyfile(hostile.project / "disk.img", out / "disk.img")
    where = {
        "{PROJECT}": str(hostile.project),
        "{RECORD}": str(hostile.project / "records/build"),
        "{OUT}": str(out),
        "{DISK}": str(out / "disk.img"),
    }
    real = []
    for arg in args:
        for key, value in where.items():
            arg = arg.replace(key, value)
        real.append(arg)
    result = hostile.sandbox.run(cli_job, real, timeout=20)
    check_outcome(result, f"distbuild {real}\nbuild.json: {json.dumps(record)}")


# --- full builds -------------------------------------------------------------------------

_versions = itertools.count()


@pytest.mark.slow
@settings(max_examples=BUILDS)
@given(text=hs.definition("tiny", packages=False))
def test_full_builds_of_hostile_definitions(hostile: Hostile, text: str) -> None:
    (hostile.project / "images/tiny.yaml").write_text(text)
    out = _fresh(hostile.out / "builds")
    argv = ["--project", str(hostile.project), "image", "--arch", "amd64", "--image", "tiny"]
    argv += ["--out", str(out), "--version", f"1.0.{next(_versions)}", "--locked"]
    argv += ["--source-date-epoch", str(EPOCH)]
    result = hostile.sandbox.run(cli_job, argv, timeout=90)
    check_outcome(result, f"images/tiny.yaml:\n{text}")
