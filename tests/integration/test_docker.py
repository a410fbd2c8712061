"""Built images in a real Docker engine: loaded through the SDK, run on all three arches.

The engine is the session's private dockerd (tests/support/dockerd.py);
foreign arches run under qemu-user through binfmt_misc. What the engine holds
is checked against the build's own OCI layout, read here independently of the
code under test.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from distbuild.cli.main import main
from distbuild.core.arch import ARCHES, Arch, host_arch
from distbuild.core.run import run
from tests.conftest import EPOCH
from tests.support.dockerd import Dockerd

pytestmark = [pytest.mark.slow, pytest.mark.network]

HOST = host_arch()


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([os.fspath(a) if isinstance(a, Path) else str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def config_digest(build: Path, arch: Arch) -> str:
    """The config digest (= Docker's image ID) of ``arch``'s manifest in a build."""
    record = json.loads((build / "build.json").read_text())
    blobs = build / record["oci"]["layout"] / "blobs" / "sha256"

    def blob(digest: str) -> dict[str, Any]:
        return dict(json.loads((blobs / digest.split(":", 1)[1]).read_text()))

    index = blob(record["oci"]["index"])
    for desc in index["manifests"]:
        if desc["platform"] == arch.platform.as_oci():
            return str(blob(desc["digest"])["config"]["digest"])
    raise AssertionError(f"{build} has no manifest for {arch.platform}")


def uname_in(engine: Dockerd, image: str) -> tuple[str, float]:
    start = time.monotonic()
    out = engine.client().containers.run(image, ["uname", "-m"], network_mode="none", remove=True)
    return out.decode().strip(), time.monotonic() - start


@pytest.mark.root
@pytest.mark.parametrize("arch", list(ARCHES.values()), ids=list(ARCHES))
def test_each_arch_loads_and_runs(
    toolbox_all: Path,
    dockerd: Dockerd,
    qemu_binfmt: list[str],
    capsys: pytest.CaptureFixture[str],
    arch: Arch,
) -> None:
    start = time.monotonic()
    rc, out, err = cli(
        capsys, "load", toolbox_all, "--platform", arch.platform, "--docker-host", dockerd.host
    )
    load_s = time.monotonic() - start
    assert rc == 0, err
    tag = out.strip()
    suffix = "" if arch == HOST else f"-{arch.name}"
    assert tag == f"distbuild/toolbox:1.0.0{suffix}"

    image = dockerd.client().images.get(tag)
    assert image.id == config_digest(toolbox_all, arch)
    assert image.attrs["Architecture"] == arch.platform.architecture
    assert image.attrs.get("Variant") == arch.platform.variant

    uname, run_s = uname_in(dockerd, image.id)
    assert uname == arch.uname
    with capsys.disabled():
        print(f"\n[docker] {arch.name}: load {load_s:.2f} s, run {run_s:.2f} s ", end="")


@pytest.mark.root
def test_load_with_tag_and_platform_alias(
    toolbox_all: Path, dockerd: Dockerd, capsys: pytest.CaptureFixture[str]
) -> None:
    # "aarch64" is the kernel's name; containerd's rules make it linux/arm64.
    rc, out, err = cli(
        capsys,
        "load",
        toolbox_all,
        "--platform",
        "aarch64",
        "--tag",
        "localhost:5000/probe/tb",
        "--docker-host",
        dockerd.host,
        "--json",
    )
    assert rc == 0, err
    loaded = json.loads(out)
    assert loaded["tag"] == "localhost:5000/probe/tb:latest"
    assert loaded["platform"] == "linux/arm64"
    image = dockerd.client().images.get("localhost:5000/probe/tb:latest")
    assert image.id == loaded["id"] == config_digest(toolbox_all, ARCHES["arm64"])


def test_platform_not_in_build(toolbox_all: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "load", toolbox_all, "--platform", "linux/riscv64")
    assert rc != 0
    assert out == ""
    assert "error: build toolbox 1.0.0 has no image for linux/riscv64\n" in err
    assert "hint: it has: linux/arm/v7, linux/arm64, linux/amd64" in err
    assert "Traceback" not in err


@pytest.mark.skipif(
    HOST is None or HOST.name == "armv7", reason="needs a host arch other than armv7"
)
def test_default_platform_missing_from_build(
    build_image: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # An armv7-only build has no image for the (amd64 or arm64) host.
    build = build_image("toolbox", "armv7")
    rc, _, err = cli(capsys, "load", build)
    assert rc != 0
    assert HOST is not None
    assert f"no image for {HOST.platform} (the host's platform)" in err
    assert "hint: it has: linux/arm/v7;" in err


def test_engine_unreachable(toolbox_all: Path, tmp_path: Path) -> None:
    """A real ``distbuild`` process: error and hint, non-zero exit, no traceback."""
    argv = [sys.executable, "-m", "distbuild.cli.main", "load", str(toolbox_all)]
    missing = f"unix://{tmp_path}/docker.sock"
    proc = run([*argv, "--docker-host", missing], check=False, capture=True)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert f"error: cannot reach the Docker engine at {missing}: No such file or directory" in err
    assert "hint: start dockerd" in err
    assert "Traceback" not in err

    # DOCKER_HOST is honoured: a TCP port that is bound but not listening refuses.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        proc = run(argv, check=False, capture=True, env={"DOCKER_HOST": host})
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert f"error: cannot reach the Docker engine at {host}: Connection refused" in err
    assert "hint:" in err
    assert "Traceback" not in err


@pytest.mark.root
@pytest.mark.skipif(HOST is None, reason="the host's arch is not in the table")
def test_image_load_end_to_end(
    project: Path,
    dockerd: Dockerd,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert HOST is not None
    monkeypatch.setenv("DOCKER_HOST", dockerd.host)
    rc, _, err = cli(
        capsys,
        "--project",
        project,
        "image",
        "--arch",
        HOST.name,
        "--image",
        "toolbox",
        "--out",
        tmp_path,
        "--release",
        "2.0.0",
        "--source-date-epoch",
        EPOCH,
        "--load",
    )
    assert rc == 0, err
    build = tmp_path / "toolbox" / "2.0.0"
    image = dockerd.client().images.get("distbuild/toolbox:2.0.0")
    assert image.id == config_digest(build, HOST)
    assert uname_in(dockerd, image.id)[0] == HOST.uname
