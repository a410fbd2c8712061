"""The network installer's refusals and a power cut mid-write, in a TCG guest.

amd64 (OVMF PXE of the installer UKI, the build tests/e2e/test_netinstall.py
makes, so the suite builds it once) in a namespace of the test's own, with a
private copy of the arch's channel (same keys as the root baked into the
image) that the test breaks and mends while the guest runs: the unattended
installer tries again every few seconds, so one boot shows several refusals
in turn, each with its reason on the console, and the disk keeps its bytes.

In one network boot: an image signed for another arch; the channel mended,
a disk smaller than the image (with a GPT); the disk grown (``block_resize``),
its partition table without ``install_wipe=1``; the table erased, a tampered
image on the server (refused only once a disk passes its checks); the server
mended, the install writes and the guest loses power at 50 %. The next
network boot installs, and the disk alone boots ``slot=a`` and blesses it.
The GPT has no protective MBR, so the guest's kernel lists no partition of
it and the installer reads the disk anew on each try.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from distbuild.bootchain import get_chain
from distbuild.channel.publish import publish
from distbuild.channel.serve import serving
from distbuild.core import bmap
from distbuild.core.arch import get_arch
from distbuild.model.recipe import load_recipe
from distbuild.node import gpt
from tests.conftest import REPO, Builder, NodeChannels, run_cli
from tests.e2e.conftest import CHANNEL_PORT, follow_args
from tests.support.channel import channel
from tests.support.netinstall_guest import IMAGE, UKI, node_netinstall
from tests.support.netns import netns
from tests.support.node import Channel, relabel
from tests.support.qemu_guest import Console

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

VERSION = "1.0.0"
DISK = f"{IMAGE}/{VERSION}/amd64/qemu/disk.img"
STEP = 600.0  # one installer step under TCG on a busy machine (PXE + start, an attempt)
REFUSED = "distbuild-install: refused:"
MIB = 1 << 20


class Net:
    """The test's namespace, its private channel on 10.0.2.2:8080, and the installer's files."""

    def __init__(self, tmp: Path, chan: Channel, build: Path) -> None:
        self.tmp, self.chan, self.build = tmp, chan, build
        self.site = tmp / "site"
        self.recipe = load_recipe(REPO, get_arch("amd64"))
        self.chain = get_chain(self.recipe.boot_chain)
        self.bmap = bmap.load(build / "amd64/disk/qemu/disk.img.bmap")

    def qemu(self, disk: Path, name: str, pxe: bool) -> list[str]:
        state = self.tmp / f"{name}-state"
        state.mkdir()
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", str(self.recipe.qemu_memory),
            "-nographic", "-no-reboot", *self.chain.qemu_args(self.recipe, disk, state),
            "-monitor", f"unix:{self.tmp / name}.monitor,server=on,wait=off",
        ]  # fmt: skip
        if not pxe:
            return [*argv, "-nic", "none"]
        return [
            *argv, "-netdev", f"user,id=n,tftp={self.site},bootfile={UKI}",
            "-device", "virtio-net-pci,netdev=n,romfile=", "-boot", "n",
        ]  # fmt: skip

    @contextmanager
    def guest(self, disk: Path, name: str, pxe: bool = True) -> Iterator[Console]:
        with ExitStack() as stack:
            wrap: list[str] = []
            if pxe:
                ns = stack.enter_context(netns(f"distbuild-e2e-nifault-{os.getpid()}"))
                with ns.entered():  # the namespace's 127.0.0.1 is 10.0.2.2 to the guest
                    stack.enter_context(serving(self.chan.repo, CHANNEL_PORT))
                wrap = ns.wrap
            proc = subprocess.Popen(
                [*wrap, *self.qemu(disk, name, pxe)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            console = Console(proc, self.tmp / f"{name}.log")
            try:
                yield console
            finally:
                console.stop()

    def monitor(self, name: str, command: str) -> str:
        """One HMP command on the guest's monitor socket; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.tmp / f"{name}.monitor"))
            answer = _until_prompt(s)
            s.sendall(command.encode() + b"\n")
            answer = _until_prompt(s)
        return answer


def _until_prompt(s: socket.socket) -> str:
    got = b""
    while not got.endswith(b"(qemu) "):
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return got.decode(errors="replace")


def expect(console: Console, text: str, timeout: float = STEP) -> None:
    """Wait for ``text`` on the console; another refusal or a stop first fails the test."""
    got = console.wait_for(text, REFUSED, "distbuild-install: stopped:", timeout=timeout)
    tail = console.log.read_text(errors="replace")[-4000:]
    assert got == text, f"waited for {text!r}, got {got!r}:\n{tail}"


def digest(disk: Path, size: int) -> str:
    """The sha256 of ``disk``'s first ``size`` bytes (its bytes before the test grew it)."""
    h = hashlib.sha256()
    with disk.open("rb") as f:
        while chunk := f.read(min(8 * MIB, size - f.tell())):
            h.update(chunk)
    return h.hexdigest()


def no_data_after(disk: Path, offset: int) -> bool:
    """Whether ``disk`` holds only zeros from ``offset`` on (holes: nothing to read)."""
    fd = os.open(disk, os.O_RDONLY)
    try:
        start = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError:
        return True  # ENXIO: no data after offset
    finally:
        os.close(fd)
    with disk.open("rb") as f:
        f.seek(start)
        while chunk := f.read(8 * MIB):
            if chunk.count(0) != len(chunk):
                return False
    return True


def new_disk(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.fixture
def net(project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path) -> Net:
    """The build of tests/e2e/test_netinstall.py, published into a private channel."""
    node_netinstall(project)
    build = build_image(IMAGE, "amd64", extra=follow_args(node_channels, "amd64"))
    node_channels.root_json("amd64")  # the root the image trusts: the keys signing below
    chan = Channel(tmp_path / "repo", node_channels.keys, tmp_path, node_channels.name("amd64"))
    publish(chan.repo, channel(chan.name), build, chan.keys)
    args = ("netboot", build, "--dir", tmp_path / "site", "--net", "10.0.2.0/24")
    assert run_cli(*args, "--board", "qemu") == 0
    return Net(tmp_path, chan, build)


def test_refusals_then_a_power_cut_at_half_then_a_new_network_boot_installs(
    net: Net, tmp_path: Path
) -> None:
    small = (net.bmap.image_size // 2) & ~(MIB - 1)
    disk = new_disk(tmp_path / "disk.img", small)
    subprocess.run(
        ["sfdisk", "-q", str(disk)], input=b"label: gpt\nsize=4096, type=linux\n", check=True
    )
    _zero(disk, 0, 512)  # no protective MBR: the kernel lists no partitions, the installer sees
    served = net.chan.target_file(DISK)
    served.unlink()  # a hard link to the session's build: tamper with a copy of its own
    subprocess.run(
        ["cp", "--sparse=always", net.build / "amd64/disk/qemu/disk.img", served], check=True
    )
    relabel(net.chan, DISK, arch="arm64")
    start = time.monotonic()
    with net.guest(disk, "install") as console:
        refusals(net, console, disk, small, served)
        # Writes at 8 MiB/s: the console's lines reach the test late on a busy host.
        net.monitor("install", f"block_set_io_throttle disk0 0 0 {8 * MIB} 0 0 0")
        expect(console, "distbuild-install: written 50 %")
        console.proc.kill()  # the power cut
    cut = time.monotonic()
    assert not no_data_after(disk, 0), "the power cut came before the write"
    assert not last_piece_written(net, disk), "the power cut came after the write"
    with disk.open("rb") as f:
        head = f.read(8 * 512)
        f.seek(-512, os.SEEK_END)
        assert not gpt.tables_found(head, f.read()), "a half-written disk has a partition table"
    with net.guest(disk, "again") as console:
        expect(console, "distbuild-install: installer started")
        expect(console, "distbuild-install: rebooting into the installed disk")
    installed = time.monotonic()
    with net.guest(disk, "disk", pxe=False) as console:
        expect(console, f"distbuild-os: booted slot=a version={VERSION} arch=amd64")
        expect(console, "distbuild-os: slot a marked good")
        assert not console.matching("distbuild-install:"), "the installed disk booted the installer"
    print(
        f"four refusals and the cut at 50 % after {cut - start:.0f} s, "
        f"installed after {installed - cut:.0f} s, booted after {time.monotonic() - installed:.0f} s"
    )


def refusals(net: Net, console: Console, disk: Path, small: int, served: Path) -> None:
    """Four refusals in turn, the disk's bytes unchanged by each; the test mends each cause."""
    before = digest(disk, small)
    expect(console, "distbuild-install: installer started")
    expect(console, "signed as arch 'arm64', not 'amd64'")
    assert digest(disk, small) == before
    relabel(net.chan, DISK, arch="amd64")
    expect(console, f"smaller than the image's {net.bmap.image_size}")
    assert digest(disk, small) == before
    grown = (net.bmap.image_size + MIB) & ~(MIB - 1)
    answer = net.monitor("install", f"block_resize disk0 {grown // MIB}M")
    assert disk.stat().st_size == grown, answer
    expect(console, "disk vda holds partitions (a GPT); not writing it")
    expect(console, "add install_wipe=1 to the kernel command line")
    assert digest(disk, small) == before and no_data_after(disk, small)
    for offset in (0, small - (64 << 10)):  # the GPT and its backup erased: a blank disk
        _zero(disk, offset, 64 << 10)
    extent = max(net.bmap.extents, key=lambda e: e.length)
    _flip(served, extent.offset + extent.length // 2)
    expect(console, "are not the signed ones")
    assert no_data_after(disk, 0), "a byte of a tampered image reached the disk"
    _flip(served, extent.offset + extent.length // 2)
    assert not console.matching("distbuild-install: writing")


def last_piece_written(net: Net, disk: Path) -> bool:
    """Whether ``disk`` holds the image's last non-zero mapped MiB before its final MiB
    (the backup GPT's, written last of all)."""
    end = net.bmap.image_size - MIB
    with (net.build / "amd64/disk/qemu/disk.img").open("rb") as image, disk.open("rb") as f:
        for e in sorted(net.bmap.extents, key=lambda e: -e.offset):
            offset = min(e.offset + e.length, end) - MIB
            if offset < e.offset:
                continue
            image.seek(offset)
            want = image.read(MIB)
            if want.count(0) != len(want):
                f.seek(offset)
                return f.read(MIB) == want
    raise AssertionError("the image has no MiB of data before its last")


def _zero(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(bytes(length))


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 1]))
