"""Diskless machines of every arch install themselves from the network and boot the installed disk.

amd64 OVMF and arm64 AAVMF PXE-boot the installer UKI, armv7 U-Boot DHCP/TFTP-boots
its script, kernel and initramfs (the build's ``netboot`` output, laid out by
``distbuild netboot``) over qemu's user-net TFTP, each in a namespace of its own
where the channel is served on 10.0.2.2:8080; the installer fetches the disk
image through TUF, writes the blank virtio disk and reboots. A second qemu run,
without the network boot or a network, boots the installed disk: ``booted
slot=a version=1.0.0`` and ``slot a marked good``. The three arches run at once
(each is mostly a qemu process waiting on its guest; see tests/support/netinstall_guest.py).
"""

from __future__ import annotations

import os
import threading
import traceback
from contextlib import ExitStack
from pathlib import Path

import pytest

from distbuild.channel.publish import publish
from distbuild.channel.serve import Server, serving
from distbuild.core import bmap
from distbuild.core.arch import get_arch
from distbuild.model.recipe import load_recipe
from tests.conftest import REPO, BuildKey, Builds, NodeChannels, build_key, run_cli
from tests.e2e.conftest import CHANNEL_PORT, follow_args
from tests.support.channel import channel
from tests.support.netinstall_guest import IMAGE, Machine, node_netinstall
from tests.support.netns import netns

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

ARCHES = ("amd64", "arm64", "armv7")
MAPPED = 1.05  # the installer fetches at most this times the disk image's mapped bytes


def ahead_builds(channels: NodeChannels, project: Path) -> list[BuildKey]:
    """The builds this module needs, queued when the session starts
    (tests/e2e/conftest.py), after the image definition they build is written."""
    node_netinstall(project)
    return [build_key(IMAGE, arch, extra=follow_args(channels, arch)) for arch in ARCHES]


def disk_sent(server: Server) -> int:
    """Bytes the server sent for the disk image (its ranges; headers included)."""
    return sum(t.sent for t in server.traffic.requests if t.path.endswith(".disk.img"))


def mapped_bytes(build: Path, arch: str) -> int:
    """The disk image's mapped bytes, from its bmap."""
    image = build / arch / "disk" / "qemu" / "disk.img"
    return bmap.load(image.with_name("disk.img.bmap")).mapped_bytes


@pytest.fixture(scope="module")
def machines(
    project: Path,
    build_image: Builds,
    node_channels: NodeChannels,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[tuple[Machine, Path]]:
    builds = build_image.many(*ahead_builds(node_channels, project))
    out = []
    for arch, build in zip(ARCHES, builds, strict=True):
        publish(node_channels.repo, channel(node_channels.name(arch)), build, node_channels.keys)
        workdir = tmp_path_factory.mktemp(f"netinstall-{arch}")
        site = workdir / "site"
        args = ("netboot", build, "--dir", site, "--net", "10.0.2.0/24", "--board", "qemu")
        assert run_cli(*args) == 0
        out.append((Machine(load_recipe(REPO, get_arch(arch)), site, workdir), build))
    return out


def install_and_boot(machine: Machine, repo: Path) -> int:
    """The network install in a namespace of its own, then the boot from disk; bytes fetched."""
    with netns(f"distbuild-e2e-netinstall-{machine.arch}-{os.getpid()}") as ns, ExitStack() as st:
        with ns.entered():  # the channel on the namespace's 127.0.0.1 (10.0.2.2 to the guest)
            server = st.enter_context(serving(repo, CHANNEL_PORT))
        console = machine.install(ns)
        assert console.matching("distbuild-install: verified vda"), machine.arch
        sent = disk_sent(server)
    booted = machine.boot()
    assert not booted.matching("distbuild-install:"), "the installed disk booted the installer"
    return sent


def test_network_install_then_boot_from_disk_on_every_arch(
    machines: list[tuple[Machine, Path]], node_channels: NodeChannels
) -> None:
    failures: dict[str, str] = {}
    sent: dict[str, int] = {}

    def one(machine: Machine) -> None:
        try:
            sent[machine.arch] = install_and_boot(machine, node_channels.repo)
        except BaseException:
            failures[machine.arch] = traceback.format_exc()

    threads = [threading.Thread(target=one, args=(m,), name=m.arch) for m, _ in machines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m, _ in machines:
        print(f"{m.arch}: {m.timings}, disk.img sent {sent.get(m.arch)}")
    assert not failures, "\n".join(f"--- {a}:\n{text}" for a, text in failures.items())
    for m, build in machines:
        mapped = mapped_bytes(build, m.arch)
        assert 0 < sent[m.arch] <= MAPPED * mapped, (m.arch, sent[m.arch], mapped)
