"""Network boots of the installer under TCG, diskless, in a namespace of the test's own:
amd64 UEFI HTTP boot (``distbuild serve --netboot``) of the UKI, armv7 U-Boot
DHCP/TFTP of boot.scr.uimg + kernel + initramfs. (amd64 OVMF PXE is
tests/e2e/test_netinstall.py's first step, which goes on to install.)

The TFTP/HTTP root is what ``distbuild netboot`` lays out. The kernel runs with
the command line the build put in the UKI or script, and the initramfs's
/init speaks on the console.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from distbuild.bootchain import get_chain
from distbuild.channel.serve import serving
from distbuild.core.arch import get_arch
from distbuild.model.recipe import Recipe, load_recipe
from tests.conftest import REPO, Builder, NodeChannels, run_cli
from tests.support.netboot import build_netboot
from tests.support.netns import NetNs, netns
from tests.support.qemu_guest import Console

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

BOOT = 150.0  # one phase (firmware + download, kernel + initramfs) under TCG on a busy machine
INIT_LINE = "distbuild-install: installer started"  # the installer initramfs's /init, first words
UKI = "amd64/netboot/qemu/installer.efi"


def lay_out(build: Path, site: Path, board: str) -> None:
    assert run_cli("netboot", build, "--dir", site, "--net", "10.0.2.0/24", "--board", board) == 0


def boot(ns: NetNs, argv: Sequence[str], log: Path, first: str) -> Console:
    """Run qemu in ``ns`` until ``first`` and then the initramfs's line appear on the console."""
    proc = subprocess.Popen(
        [*ns.wrap, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    console = Console(proc, log)
    try:
        start = time.monotonic()
        assert console.wait_for(first, timeout=BOOT), log.read_text(errors="replace")[-3000:]
        loaded = time.monotonic() - start
        assert console.wait_for(INIT_LINE, timeout=BOOT), log.read_text(errors="replace")[-3000:]
        print(f"{argv[0]}: {first!r} at {loaded:.1f}s, init at {time.monotonic() - start:.1f}s")
    finally:
        console.stop()
    return console


def kernel_cmdline(console: Console) -> str:
    return next(line for line in console.lines if "Kernel command line:" in line)


def ovmf(recipe: Recipe, tmp_path: Path, netdev: str) -> list[str]:
    """OVMF with a blank disk (nothing to boot from) and a NIC without iPXE's option ROM
    (``romfile=``: with it, iPXE passes its own command line to the UKI)."""
    blank = tmp_path / "blank.img"
    with blank.open("wb") as f:
        f.truncate(64 << 20)
    return [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(recipe.qemu_memory), "-nographic",
        "-no-reboot", *get_chain(recipe.boot_chain).qemu_args(recipe, blank, tmp_path / "state"),
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=n,romfile=",
    ]  # fmt: skip


@pytest.fixture
def amd64(
    project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> tuple[Recipe, Path]:
    site = tmp_path / "site"
    lay_out(build_netboot(project, build_image, node_channels, "amd64"), site, "qemu")
    (tmp_path / "state").mkdir()
    return load_recipe(REPO, get_arch("amd64")), site


def test_amd64_uefi_http_boot_from_serve_netboot(
    amd64: tuple[Recipe, Path], tmp_path: Path
) -> None:
    recipe, site = amd64
    tool = shutil.which("virt-fw-vars") or str(Path(sys.executable).with_name("virt-fw-vars"))
    if not Path(tool).exists():
        pytest.skip("needs virt-fw-vars (PyPI virt-firmware, in the test extras)")
    uri = f"http://10.0.2.2:8080/netboot/{UKI}"
    template = get_chain(recipe.boot_chain).firmware(recipe)["vars"]
    vars_copy = tmp_path / "state/efivars.fd"  # the chain's qemu_args use this copy as it is
    subprocess.run(
        [tool, "--input", template, "--output", vars_copy, "--set-boot-uri", uri],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "repo").mkdir()
    with netns(f"distbuild-e2e-http-{os.getpid()}") as ns, ExitStack() as stack:
        with (
            ns.entered()
        ):  # the server's socket on the namespace's 127.0.0.1 (10.0.2.2 to the guest)
            server = stack.enter_context(serving(tmp_path / "repo", 8080, netboot=site))
        console = boot(ns, ovmf(recipe, tmp_path, "user,id=n"), tmp_path / "console.log", uri)
    sent = [t for t in server.traffic.requests if t.path == f"/{UKI}" and t.status == 200]
    assert (
        sent and sent[-1].sent >= (site / UKI).stat().st_size
    )  # the firmware fetched it over HTTP
    assert "distbuild.board=qemu" in kernel_cmdline(console)


def test_armv7_uboot_dhcp_boots_the_netboot_script_to_its_init(
    project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    lay_out(build_netboot(project, build_image, node_channels, "armv7"), site, "qemu")
    recipe = load_recipe(REPO, get_arch("armv7"))
    argv = [
        "qemu-system-arm", "-accel", "tcg", "-M", recipe.qemu_machine, "-cpu", str(recipe.qemu_cpu),
        "-m", str(recipe.qemu_memory), "-nographic", "-no-reboot",
        "-bios", str(get_chain(recipe.boot_chain).firmware(recipe)["u-boot"]),
        # No disk: distro boot falls through to its dhcp target, which TFTPs boot.scr.uimg.
        "-netdev", f"user,id=n,tftp={site}", "-device", "virtio-net-device,netdev=n",
    ]  # fmt: skip
    with netns(f"distbuild-e2e-uboot-{os.getpid()}") as ns:
        console = boot(ns, argv, tmp_path / "console.log", "distbuild: network install")
    cmdline = kernel_cmdline(console)
    assert f"distbuild.channel={node_channels.name('armv7')}" in cmdline
    assert "distbuild.board=qemu" in cmdline
