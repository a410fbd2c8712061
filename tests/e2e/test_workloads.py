"""Workloads on every arch: one multi-arch index, three platforms, each node pulling its own.

distbuild's own ``toolbox`` image, built for the three arches into one index,
is pushed with ``distbuild push`` to Debian's ``docker-registry``, which runs
inside a network namespace the test makes (plain HTTP, no auth: the node
lists it under ``insecure_registries``). Each arch's node (the session's
1.0.0 build) gets a provisioning file on its boot partition with
``distbuild disk provision``: a hostname, one SSH key, and one container, the
pushed index by digest running ``uname -m``. The three guests boot at once in
that namespace (qemu's user network shows them its loopback as 10.0.2.2);
each console shows its hostname, ``services up`` and the container's output,
``armv7l``, ``aarch64`` or ``x86_64``: containerd pulled, by the same
digest, the manifest of the node's own platform, and runc ran it.

Then the amd64 node reboots with the registry gone (the same guest's disk,
one more boot rather than another node of its own): containerd's store on
``data`` holds the image by its digest, and the container runs again.

``DISTBUILD_E2E_ARCHES=amd64`` runs the test with one arch (while developing);
the reboot without the registry needs amd64 among them.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.run import run
from distbuild.model.recipe import load_recipe
from distbuild.qemu import Guest
from tests.conftest import REPO, Builder, distbuild_process, read_record, run_cli
from tests.e2e.conftest import GUEST_HOST
from tests.support.netns import NIC, NetNs, netns
from tests.support.registry import RegistryServer
from tests.support.ssh import ed25519_key

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

ARCHES = tuple(os.environ.get("DISTBUILD_E2E_ARCHES", "armv7,arm64,amd64").split(","))
BOOT = 600.0  # boot, containerd, a pull and a run, three TCG guests on a busy 2-core machine
KEY = ed25519_key("owner@e2e-workloads")
# Built in the background before the module runs (tests/e2e/conftest.py).
NODE_BUILDS = [(arch, "1.0.0") for arch in ARCHES]
IMAGE_BUILDS = [("toolbox", "all")]


def provision_file(arch: str, image: str, registry: str) -> str:
    return f"""# distbuild-provision.yaml: the e2e workloads node ({arch})
instance-id: e2e-workloads-{arch}
hostname: wl-{arch}
ssh_authorized_keys:
  - {KEY}
insecure_registries: [{registry}]
containers:
  - name: uname
    image: {image}
    args: [uname, -m]
    restart: never
"""


@contextmanager
def registry_in(ns: NetNs, root: Path) -> Iterator[RegistryServer]:
    """``docker-registry`` on 127.0.0.1 inside ``ns`` (the process starts in it)."""
    with ns.entered():
        server = RegistryServer(root, auth="none").start()
    try:
        yield server
    finally:
        server.stop()


def push(ns: NetNs, build: Path, registry: RegistryServer) -> str:
    """``distbuild push`` of the toolbox index; its digest (run inside ``ns``)."""
    with ns.entered():
        proc = distbuild_process("push", build, f"{registry.address}/toolbox:1.0.0", "--json")
    assert proc.returncode == 0, proc.stderr
    digest = str(json.loads(proc.stdout)["digest"])
    record = read_record(build)
    assert digest == record["oci"]["index"]  # the build's own index, as built
    index = json.loads((build / "oci/blobs/sha256" / digest[7:]).read_bytes())
    platforms = {json.dumps(m["platform"], sort_keys=True) for m in index["manifests"]}
    assert len(platforms) == 3, platforms
    return str(digest)


def disk_with(build: Path, arch: str, workdir: Path, provision: str) -> Path:
    (rel,) = [
        a["path"]
        for a in read_record(build)["artifacts"]
        if a["kind"] == "disk" and a["arch"] == arch
    ]
    disk = workdir / "node.img"
    run(["cp", "--sparse=always", build / rel, disk])
    source = workdir / "distbuild-provision.yaml"
    source.write_text(provision)
    assert run_cli("disk", "provision", disk, source) == 0
    return disk


def boot(arch: str, disk: Path, ns: NetNs, workdir: Path, name: str = "console") -> str:
    """Boot until the console shows the hostname, services up and the container's output."""
    wanted = [
        f"distbuild-os: hostname wl-{arch}",
        "distbuild-os: services up",
        f"distbuild-os: container uname: {get_arch(arch).uname}",
        "distbuild-os: container uname exited (0); restart=never: exited",
    ]
    recipe = load_recipe(REPO, get_arch(arch))
    with (
        (workdir / f"{name}.log").open("w") as echo,
        Guest(recipe, disk, write=True, echo=echo, nic=NIC, wrap=ns.wrap) as g,
    ):
        g.watch(lambda: all(w in g.transcript for w in wanted), BOOT, " and ".join(wanted))
    return g.transcript


def test_each_arch_pulls_its_own_platform_of_one_index_and_runs_it(
    build_node: Builder,
    toolbox_all: Path,
    tmp_path: Path,
) -> None:
    """Then the amd64 node reboots with the registry gone (one more boot of the
    same disk): containerd's store on data holds the image by its digest."""
    builds = {arch: build_node(arch, version="1.0.0") for arch in ARCHES}
    failures: dict[str, str] = {}
    transcripts: dict[str, str] = {}
    disks: dict[str, Path] = {}
    with netns(f"distbuild-e2e-wl-{os.getpid()}") as ns:
        with registry_in(ns, tmp_path / "reg") as reg:
            digest = push(ns, toolbox_all, reg)
            image = f"{GUEST_HOST}:{reg.port}/toolbox@{digest}"
            registry = f"{GUEST_HOST}:{reg.port}"

            def one(arch: str) -> None:
                workdir = tmp_path / arch
                workdir.mkdir()
                try:
                    provision = provision_file(arch, image, registry)
                    disks[arch] = disk_with(builds[arch], arch, workdir, provision)
                    transcripts[arch] = boot(arch, disks[arch], ns, workdir)
                except BaseException:
                    failures[arch] = f"(console in {workdir})\n{traceback.format_exc()}"

            threads = [threading.Thread(target=one, args=(a,), name=a) for a in ARCHES]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if failures:
            pytest.fail(
                "\n".join(f"--- {a}: {text}" for a, text in failures.items()), pytrace=False
            )
        # The registry is gone: amd64 boots its disk again.
        again = "amd64" if "amd64" in disks else None
        if again:
            second = boot(again, disks[again], ns, tmp_path / again, "second")
    for arch, transcript in transcripts.items():
        # The same index digest, and the node pulled it for its own platform.
        pulled = f"distbuild-os: container uname pulled {image} for {get_arch(arch).platform}"
        assert pulled in transcript, transcript[-3000:]
        assert "cannot pull" not in transcript
    if again:
        assert f"distbuild-os: container uname: {image} is here already" in second
        assert "cannot pull" not in second
