"""One diskless machine's network install, then its boot from the installed disk.

Shared by tests/e2e/test_netinstall.py and benchmarks/netboot.py. The machine
boots from the network in a namespace of the caller's (qemu's user network:
TFTP from the ``distbuild netboot`` directory, the channel on the namespace's
127.0.0.1:8080, which the guest sees as 10.0.2.2):

- amd64 OVMF and arm64 AAVMF PXE-boot the installer UKI (``bootfile=``; the
  NIC without iPXE's option ROM, ``romfile=``);
- armv7 U-Boot finds nothing on the blank disk and falls through to its
  ``dhcp`` target, which TFTPs ``boot.scr.uimg`` (kernel + initramfs).

The installer fetches the disk image through TUF, writes the blank virtio
disk and reboots (``-no-reboot``: qemu exits). A second qemu run, without a
network, boots the installed disk to ``slot a marked good``.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.bootchain import get_chain
from distbuild.model.recipe import Recipe
from tests.support.netns import NetNs
from tests.support.qemu_guest import Console

DISK_SIZE = 1 << 30
INSTALL = 900.0  # network boot, installer start, fetch, write, read-back under TCG, busy machine
BOOT = 600.0
EXIT = 120.0  # from "rebooting" to qemu's exit (-no-reboot)
STARTED = "distbuild-install: installer started"
REBOOTING = "distbuild-install: rebooting"


def uki(arch: str, board: str = "qemu") -> str:
    """The installer UKI's path in the netboot directory (UEFI arches)."""
    return f"{arch}/netboot/{board}/installer.efi"


@dataclass
class Machine:
    """One arch's machine: its recipe, the netboot directory, a work directory."""

    recipe: Recipe
    site: Path
    workdir: Path
    version: str = "1.0.0"
    timings: dict[str, float] = field(default_factory=dict)
    install_console: Console | None = None
    boot_console: Console | None = None

    @property
    def arch(self) -> str:
        return self.recipe.arch.name

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.img"

    def base(self, state: str) -> list[str]:
        """qemu with the arch's machine, firmware and the (blank or installed) disk."""
        r = self.recipe
        (self.workdir / state).mkdir(exist_ok=True)
        chain = get_chain(r.boot_chain)
        return [
            f"qemu-system-{r.arch.qemu_system}", "-accel", "tcg", "-m", str(r.qemu_memory),
            "-nographic", "-no-reboot", *chain.qemu_args(r, self.disk, self.workdir / state),
        ]  # fmt: skip

    def network_boot(self) -> list[str]:
        if self.recipe.arch.efi_arch is None:  # U-Boot: DHCP, then boot.scr.uimg over TFTP
            net = [
                "-netdev",
                f"user,id=n,tftp={self.site}",
                "-device",
                "virtio-net-device,netdev=n",
            ]
        else:
            net = [
                "-netdev", f"user,id=n,tftp={self.site},bootfile={uki(self.arch)}",
                "-device", "virtio-net-pci,netdev=n,romfile=", "-boot", "n",
            ]  # fmt: skip
        return [*self.base("pxe-state"), *net]

    def from_disk(self) -> list[str]:
        return [*self.base("disk-state"), "-nic", "none"]

    def blank_disk(self) -> None:
        with self.disk.open("wb") as f:
            f.truncate(DISK_SIZE)

    def install(self, ns: NetNs) -> Console:
        """Power on diskless: the network boot runs the installer, which writes the disk."""
        self.blank_disk()
        start = time.monotonic()
        console = self._run([*ns.wrap, *self.network_boot()], "install")
        self.install_console = console
        try:
            self._phase(console, start, "installer started", STARTED, INSTALL)
            self._phase(console, start, "network up", "distbuild-install: network up", INSTALL)
            self._phase(console, start, "rebooting", REBOOTING, INSTALL)
            console.proc.wait(timeout=EXIT)  # the guest synced and reset: qemu exits
            self.timings["install exited"] = time.monotonic() - start
        finally:
            console.stop()
        return console

    def boot(self) -> Console:
        """Power on again without a network: the installed disk boots and is blessed."""
        start = time.monotonic()
        console = self._run(self.from_disk(), "boot")
        self.boot_console = console
        booted = f"distbuild-os: booted slot=a version={self.version} arch={self.arch}"
        try:
            self._phase(console, start, "booted", booted, BOOT)
            self._phase(console, start, "marked good", "distbuild-os: slot a marked good", BOOT)
        finally:
            console.stop()
        return console

    def _run(self, argv: list[str], name: str) -> Console:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        return Console(proc, self.workdir / f"{name}.console.log")

    def _phase(self, console: Console, start: float, name: str, text: str, limit: float) -> None:
        left = limit - (time.monotonic() - start)
        if console.wait_for(text, timeout=max(left, 1.0)) is None:
            tail = console.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.arch}: no {text!r} within {limit:.0f} s:\n{tail}")
        self.timings[name] = time.monotonic() - start


IMAGE = "node-netinstall"  # the node image with the netboot output
UKI = uki("amd64")  # the amd64 installer in the netboot directory (test_netinstall_faults.py)


def node_netinstall(project: Path) -> None:
    """The node image with the netboot output (the installer writes this image's disk)."""
    text = (project / "images/node.yaml").read_text()
    text = text.replace("name: node\n", f"name: {IMAGE}\n", 1)
    text = text.replace("outputs: [oci, root, disk]", "outputs: [root, disk, netboot]", 1)
    assert f"name: {IMAGE}" in text and "netboot]" in text
    (project / "images" / f"{IMAGE}.yaml").write_text(text)
