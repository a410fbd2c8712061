"""Property tests: hostile definitions, build records and argv never act outside their root.

Hypothesis composes inputs from hostile pieces (tests/support/hostile_strategies.py)
and runs each through loading and customisation of a small synthetic root,
through the CLI's argument checks, and (marked slow) through full builds of a
one-package image, each in a fresh process inside one private mount namespace
(tests/support/hostile.py) where everything but the output and cache
directories is read-only and TRAP is a tmpfs that must stay empty. Each run
must end in success or ``error:``/``hint:``: never exit 70, a traceback, a
hang past its deadline, an attempted write outside (EROFS) or a trap written.

The example counts come from the hypothesis profile (tests/conftest.py):
``ci`` (the default) runs 260 + 260 examples and 25 builds, ``dev`` a few.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from distbuild import scratch
from distbuild.channel.admin import create_channel
from distbuild.cli.main import main
from distbuild.core.arch import ARCHES
from distbuild.core.errors import DistbuildError
from distbuild.model.image import load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs.customise import customise
from tests.conftest import EPOCH, REPO
from tests.support import hostile_strategies as hs
from tests.support.channel import channel, make_build, make_keys
from tests.support.hostile import Sandbox, check_outcome

# The module fixture resolves the tiny image's lock once against the host's mirror.
pytestmark = [pytest.mark.root, pytest.mark.network]
TRAP = Path(hs.TRAP)
BUILDS = max(1, settings().max_examples // 10)


@dataclass(frozen=True)
class Hostile:
    """The session's directories and its namespaced worker."""

    project: Path  # read-only in the namespace; the test writes each example's files here
    template: Path  # the synthetic root (read-only in the namespace)
    record: dict  # type: ignore[type-arg]  # records/tiny/1.0.0/build.json as written
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
    # As in a build: an OSError (no space, a name too long) is a user error naming the path.
    with scratch.user_errors(root.parent):
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
    record = make_build(project / "records", "tiny", "1.0.0", arches=("amd64",))
    (record / "amd64/link-out").symlink_to("/etc/shadow")
    os.mkfifo(record / "amd64/fifo")
    keys = make_keys(project / "keys")
    create_channel(project / "repo", channel("alpha"), keys)
    keys.export_online(project / "online-keys")  # what CI holds
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
    _import_all()  # once, before the fork, instead of in every job
    sandbox = Sandbox([out, cache], [TRAP], env, cache / "tmp" / "job.log")
    try:
        good = json.loads((project / "records/tiny/1.0.0/build.json").read_text())
        yield Hostile(project, template, good, out, cache, sandbox)
    finally:
        sandbox.close()


def _import_all() -> None:
    import distbuild

    for module in pkgutil.walk_packages(distbuild.__path__, "distbuild."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


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
    event(f"exit {result.returncode}")
    if os.environ.get("HOSTILE_TRACE"):
        print(result.returncode, result.output.strip().splitlines()[:1])
    check_outcome(result, f"images/fuzz.yaml:\n{text}")
    left = sorted(p.name for p in jobs.iterdir())
    assert left in ([], ["root"]), f"wrote next to the root: {left}\n{text}"


# --- the command line -------------------------------------------------------------------


VALID = ("tiny", "nolock", "fuzz")


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    """One command, mostly valid, with hostile names, numbers and paths.

    ``{X}`` stand for the session's paths (see ``_paths``).
    """
    name, version = draw(hs.one(hs.CLI_NAMES)), draw(hs.one(hs.VERSIONS))
    arch = draw(hs.one(hs.ARCHES))
    build = draw(
        hs.one(["{RECORD}", "/", "/etc", "{PROJECT}/images/fifo", "{OUT}", "{RECORD}/amd64"])
    )
    level = draw(hs.one(["1", "0", "10", "-1"]))
    keys = draw(hs.one(["{PROJECT}/online-keys", "{PROJECT}/keys", "{PROJECT}", "/etc"]))
    commands = {
        "image": [
            "image",
            "--arch",
            arch,
            "--image",
            "nolock" if name == "tiny" else name,
            "--out",
            "{OUT}/img",
            "--release",
            version,
            "--locked",
            "--source-date-epoch",
            draw(hs.one(hs.EPOCHS)),
            "--compression-level",
            level,
        ],
        # A valid image would resolve against the closed port for seconds of retries.
        "lock": [
            "lock",
            "--arch",
            arch,
            "--image",
            "missing" if name in VALID else name,
            "--mirror",
            "http://127.0.0.1:9/",
        ],
        "merge": ["merge", build, draw(hs.one(["{RECORD}", *hs.VERSIONS])), "--out", "{OUT}/m"],
        "push": [
            "push",
            build,
            draw(hs.ref()),
            "--retries",
            draw(hs.one(["0", "-1", "21", "9" * 20])),
            "--chunk-size",
            draw(hs.one(["5M", "0", "-1", "1", "9" * 30 + "T", "x"])),
        ],
        "load": [
            "load",
            build,
            "--platform",
            draw(hs.one(hs.PLATFORMS)),
            "--tag",
            draw(hs.one(hs.TAGS_CLI)),
        ],
        "publish": [
            "publish",
            build,
            "--channel",
            draw(hs.one(hs.CHANNELS)),
            "--repo",
            "{OUT}/repo",
            "--keys",
            keys,
        ],
        "channel": [
            "channel",
            draw(st.sampled_from(["show", "init", "refresh"])),
            draw(hs.one(hs.CHANNELS)),
            "--repo",
            "{OUT}/repo",
            "--keys",
            keys,
        ],
        "status": [
            "disk",
            "status",
            draw(hs.one(["{DISK}", "/dev/zero", "{PROJECT}/images/fifo", "/"])),
            "--arch",
            arch,
        ],
        "slot": [
            "disk",
            draw(st.sampled_from(["set-slot", "mark-good", "mark-unbootable"])),
            "{DISK}",
            "--arch",
            arch,
            "--slot",
            draw(hs.one(["a", "b", "c", "A", "../a"])),
        ],
        "check": ["recipes", "check"],
    }
    command = commands[draw(st.sampled_from(sorted(commands)))]
    if command[:2] == ["channel", "show"]:
        command = command[:-2]  # show reads, it takes no keys
    if command[:2] == ["channel", "refresh"]:
        command.insert(2, "--channel")  # refresh takes its channel as an option
    if command[:2] == ["channel", "init"] and keys.endswith("online-keys"):
        command[-1] = "{PROJECT}/keys"  # making a channel takes the root keys
    return ["--project", "{PROJECT}", *command]


def _paths(hostile: Hostile, out: Path) -> dict[str, str]:
    return {
        "{PROJECT}": str(hostile.project),
        "{RECORD}": str(hostile.project / "records/tiny/1.0.0"),
        "{OUT}": str(out),
        "{DISK}": str(out / "disk.img"),
    }


@settings(max_examples=settings().max_examples + 10)
@given(data=st.data(), args=argv())
def test_cli_arguments_are_refused_clearly(
    hostile: Hostile, data: st.DataObject, args: list[str]
) -> None:
    record = data.draw(hs.build_record(hostile.record), label="build.json")
    (hostile.project / "records/tiny/1.0.0/build.json").write_text(json.dumps(record))
    out = _fresh(hostile.out / "cli")
    shutil.copyfile(hostile.project / "disk.img", out / "disk.img")
    if args[2] in ("publish", "channel"):  # 260 files: only for the commands that use it
        shutil.copytree(hostile.project / "repo", out / "repo")
    real = []
    for arg in args:
        for key, value in _paths(hostile, out).items():
            arg = arg.replace(key, value)
        real.append(arg)
    start = time.monotonic()
    result = hostile.sandbox.run(cli_job, real, timeout=20)
    event(f"{args[2]} {args[3]}: exit {result.returncode}")
    if os.environ.get("HOSTILE_TRACE"):
        took = time.monotonic() - start
        print(f"{took:.2f}", real[2:], result.returncode, result.output.strip().splitlines()[:1])
    check_outcome(result, f"distbuild {real}\nbuild.json: {json.dumps(record)}")


# --- full builds -------------------------------------------------------------------------

_versions = itertools.count()


@pytest.mark.slow
@settings(max_examples=BUILDS)
@given(text=hs.definition("tiny", packages=False, wellformed=True))
def test_full_builds_of_hostile_definitions(hostile: Hostile, text: str) -> None:
    (hostile.project / "images/tiny.yaml").write_text(text)
    out = _fresh(hostile.out / "builds")
    argv = ["--project", str(hostile.project), "image", "--arch", "amd64", "--image", "tiny"]
    argv += ["--out", str(out), "--release", f"1.0.{next(_versions)}", "--locked"]
    argv += ["--source-date-epoch", str(EPOCH)]
    result = hostile.sandbox.run(cli_job, argv, timeout=90)
    event(f"exit {result.returncode}")
    if os.environ.get("HOSTILE_TRACE"):
        print(result.returncode, result.output.strip().splitlines()[-2:])
    check_outcome(result, f"images/tiny.yaml:\n{text}")


# --- what the property test found ---------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "init", "--keys", "{LONG}"],
        ["channel", "init", "alpha", "--repo", "{TMP}", "--keys", "{LONG}"],
        ["channel", "refresh", "--channel", "alpha", "--repo", "{TMP}", "--keys", "{LONG}"],
        ["publish", "{TMP}", "--channel", "alpha", "--repo", "{TMP}", "--keys", "{LONG}"],
        ["serve", "--repo", "{LONG}", "--port", "1"],
    ],
)
def test_a_path_no_file_system_can_hold_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A 300-byte path component was an OSError (exit 70) wherever pathlib met it first."""
    long = str(tmp_path / ("x" * 300))
    argv = [a.replace("{LONG}", long).replace("{TMP}", str(tmp_path)) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the name is too long" in err and "hint: each part of a path" in err, err
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_a_disk_that_is_not_a_file_or_block_device_is_refused(tmp_path: Path, kind: str) -> None:
    """'disk status FIFO' blocked in its first read forever (found by the property test)."""
    if kind == "fifo":
        disk = tmp_path / "fifo"
        os.mkfifo(disk)
    else:
        disk = Path("/dev/zero")
    code = "import sys; from distbuild.cli.main import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--project", str(REPO), "disk", "status", str(disk)]
    done = subprocess.run([*argv, "--arch", "amd64"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "is not a disk image file or a block device" in done.stderr
    assert "hint: " in done.stderr
