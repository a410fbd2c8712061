"""Network boots of the installer under TCG, diskless, over qemu's user-net TFTP:
amd64 OVMF PXE of the UKI, armv7 U-Boot DHCP/TFTP of boot.scr.uimg + kernel + initramfs.

The TFTP root is what ``distbuild netboot`` lays out; qemu runs in a
namespace of the test's own. The UKI's stub starts the kernel with the UKI's
command line and initramfs, and the initramfs's /init speaks on the console.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from distbuild.bootchain import get_chain
from distbuild.core.arch import get_arch
from distbuild.model.recipe import load_recipe
from tests.conftest import REPO, Builder, NodeChannels, run_cli
from tests.support.netboot import CHANNEL_URL, build_netboot
from tests.support.netns import netns
from tests.support.qemu_guest import Console

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

BOOT = 90.0  # firmware, PXE download, kernel, initramfs under TCG on a busy machine
INIT_LINE = "distbuild-initramfs:"  # the initramfs's /init, first words on the console


def test_amd64_pxe_boots_the_installer_uki_to_its_init(
    project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> None:
    build = build_netboot(project, build_image, node_channels, "amd64")
    site = tmp_path / "site"
    assert (
        run_cli("netboot", build, "--dir", site, "--net", "10.0.2.0/24", "--board", "amd64=qemu")
        == 0
    )
    boot_file = "amd64/netboot/qemu/installer.efi"
    assert (
        f"pxe-service=x86-64_EFI,distbuild-amd64,{boot_file}" in (site / "dnsmasq.conf").read_text()
    )

    recipe = load_recipe(REPO, get_arch("amd64"))
    blank = tmp_path / "blank.img"
    with blank.open("wb") as f:
        f.truncate(64 << 20)  # a diskless machine's empty disk: nothing to boot from
    state = tmp_path / "state"
    state.mkdir()
    with netns(f"distbuild-e2e-pxe-{os.getpid()}") as ns:
        argv = [
            *ns.wrap, "qemu-system-x86_64", "-accel", "tcg", "-m", str(recipe.qemu_memory),
            "-nographic", "-no-reboot",
            *get_chain(recipe.boot_chain).qemu_args(recipe, blank, state),
            "-netdev", f"user,id=n,tftp={site},bootfile={boot_file}",
            # romfile=: OVMF's own PXE, not iPXE's option ROM (which passes its own command line)
            "-device", "virtio-net-pci,netdev=n,romfile=", "-boot", "n",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        console = Console(proc, tmp_path / "console.log")
        try:
            start = time.monotonic()
            assert console.wait_for("NBP file downloaded", timeout=BOOT), console.log.read_text()[
                -3000:
            ]
            downloaded = time.monotonic() - start
            assert console.wait_for(INIT_LINE, timeout=BOOT), console.log.read_text()[-3000:]
            print(
                f"PXE download done at {downloaded:.1f}s, init at {time.monotonic() - start:.1f}s"
            )
        finally:
            console.stop()
    # The kernel ran with the UKI's own command line (not one the firmware or ROM passed).
    cmdline = next(line for line in console.lines if "Kernel command line:" in line)
    assert f"distbuild.channel_url={CHANNEL_URL}" in cmdline
    assert f"distbuild.channel={node_channels.name('amd64')}" in cmdline
    assert "distbuild.board=qemu" in cmdline


def test_armv7_uboot_dhcp_boots_the_netboot_script_to_its_init(
    project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> None:
    build = build_netboot(project, build_image, node_channels, "armv7")
    site = tmp_path / "site"
    assert (
        run_cli("netboot", build, "--dir", site, "--net", "10.0.2.0/24", "--board", "armv7=qemu")
        == 0
    )
    recipe = load_recipe(REPO, get_arch("armv7"))
    with netns(f"distbuild-e2e-uboot-{os.getpid()}") as ns:
        argv = [
            *ns.wrap, "qemu-system-arm", "-accel", "tcg", "-M", recipe.qemu_machine,
            "-cpu", str(recipe.qemu_cpu), "-m", str(recipe.qemu_memory), "-nographic", "-no-reboot",
            "-bios", str(get_chain(recipe.boot_chain).firmware(recipe)["u-boot"]),
            # No disk: distro boot falls through to its dhcp target, which TFTPs boot.scr.uimg.
            "-netdev", f"user,id=n,tftp={site}", "-device", "virtio-net-device,netdev=n",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        console = Console(proc, tmp_path / "console.log")
        try:
            start = time.monotonic()
            assert console.wait_for("distbuild: network install", timeout=BOOT), (
                console.log.read_text()[-3000:]
            )
            assert console.wait_for(INIT_LINE, timeout=BOOT), console.log.read_text()[-3000:]
            print(f"armv7: init at {time.monotonic() - start:.1f}s")
        finally:
            console.stop()
    cmdline = next(line for line in console.lines if "Kernel command line:" in line)
    assert f"distbuild.channel={node_channels.name('armv7')}" in cmdline
    assert "distbuild.board=qemu" in cmdline
