"""A diskless amd64 machine installs itself from the network and boots the installed disk.

OVMF PXE-boots the installer UKI (the build's ``netboot`` output, laid out by
``distbuild netboot``) over qemu's user-net TFTP, in a namespace of the test's
own where the channel is served on 10.0.2.2:8080; the installer fetches the
disk image through TUF, writes the blank virtio disk and reboots. A second
qemu run, without the network boot or a network, boots the installed disk:
``booted slot=a`` and ``slot a marked good``.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from distbuild.bootchain import get_chain
from distbuild.channel.publish import publish
from distbuild.channel.serve import serving
from distbuild.core.arch import get_arch
from distbuild.model.recipe import load_recipe
from tests.conftest import REPO, Builder, NodeChannels, run_cli
from tests.e2e.conftest import CHANNEL_PORT, follow_args
from tests.support.channel import channel
from tests.support.netns import NetNs, netns
from tests.support.qemu_guest import Console

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

IMAGE = "node-netinstall"
UKI = "amd64/netboot/qemu/installer.efi"
INSTALL = 900.0  # PXE, installer start, fetch, write, read-back under TCG on a busy machine
BOOT = 600.0


def node_netinstall(project: Path) -> None:
    """The node image with the netboot output (the UKI installs this image's disk)."""
    text = (project / "images/node.yaml").read_text()
    text = text.replace("name: node\n", f"name: {IMAGE}\n", 1)
    text = text.replace("outputs: [oci, root, disk]", "outputs: [root, disk, netboot]", 1)
    assert f"name: {IMAGE}" in text and "netboot]" in text
    (project / "images" / f"{IMAGE}.yaml").write_text(text)


def run(ns: NetNs | None, argv: list[str], log: Path, until: tuple[str, ...]) -> Console:
    wrap = ns.wrap if ns is not None else []
    proc = subprocess.Popen(
        [*wrap, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    console = Console(proc, log)
    try:
        for text in until:
            limit = INSTALL if ns is not None else BOOT
            assert console.wait_for(text, timeout=limit), log.read_text(errors="replace")[-4000:]
    finally:
        console.stop()
    return console


def test_amd64_network_install_then_boot_from_disk(
    project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> None:
    node_netinstall(project)
    build = build_image(IMAGE, "amd64", extra=follow_args(node_channels, "amd64"))
    chan = node_channels.name("amd64")
    publish(node_channels.repo, channel(chan), build, node_channels.keys)
    site = tmp_path / "site"
    args = ("netboot", build, "--dir", site, "--net", "10.0.2.0/24", "--board", "qemu")
    assert run_cli(*args) == 0
    recipe = load_recipe(REPO, get_arch("amd64"))
    chain = get_chain(recipe.boot_chain)
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(1 << 30)
    base = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(recipe.qemu_memory), "-nographic"]
    for state in ("pxe-state", "disk-state"):
        (tmp_path / state).mkdir()
    pxe = [
        *base, "-no-reboot", *chain.qemu_args(recipe, disk, tmp_path / "pxe-state"),
        "-netdev", f"user,id=n,tftp={site},bootfile={UKI}",
        "-device", "virtio-net-pci,netdev=n,romfile=", "-boot", "n",
    ]  # fmt: skip
    start = time.monotonic()
    with netns(f"distbuild-e2e-netinstall-{os.getpid()}") as ns, ExitStack() as stack:
        with ns.entered():  # the channel on the namespace's 127.0.0.1 (10.0.2.2 to the guest)
            server = stack.enter_context(serving(node_channels.repo, CHANNEL_PORT))
        console = run(
            ns,
            pxe,
            tmp_path / "install.log",
            ("distbuild-install: installer started", "distbuild-install: rebooting"),
        )
    installed = time.monotonic() - start
    assert console.matching("distbuild-install: verified vda")
    disk_bytes = sum(
        t.sent for t in server.traffic.requests if t.path.endswith(".disk.img") and t.status == 206
    )
    started = console.matching("installer started")[0]
    print(f"install: {installed:.0f} s, {started}, disk.img bytes sent {disk_bytes}")
    second = [*base, "-no-reboot", *chain.qemu_args(recipe, disk, tmp_path / "disk-state")]
    second += ["-nic", "none"]
    booted = run(
        None,
        second,
        tmp_path / "boot.log",
        (
            "distbuild-os: booted slot=a version=1.0.0 arch=amd64",
            "distbuild-os: slot a marked good",
        ),
    )
    assert not booted.matching("distbuild-install:"), "the installed disk booted the installer"
