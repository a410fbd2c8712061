"""The network installer against a real channel on loopback and a file as the disk.

The channel is the project's own publish of a board disk (a small sparse GPT
image and its bmaptool bmap), served by ``distbuild serve``'s server; the
installer is ``distbuild-update install-disk`` (its core, and its CLI for the
console lines and exit codes) with python-tuf underneath, trusting the root
baked into the "node image" (the machine's root.json).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from distbuild.channel.serve import serving
from distbuild.node import gpt, netdisk, netinstall
from distbuild.node.cli import main
from distbuild.node.http import Http
from distbuild.node.netinstall import install, params
from tests.support.netinstall import (
    MIB,
    Machine,
    cmdline,
    image_of,
    mapped_equal,
    publish_disk,
)
from tests.support.node import Channel, Misbehave, fault_server, make_channel, relabel

DISK = "node/v1/amd64/qemu/disk.img"


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    publish_disk(c.repo, c.keys, c.builds, "v1")
    return c


@pytest.fixture
def url(chan: Channel) -> Iterator[str]:
    with serving(chan.repo) as server:
        yield server.url


def machine(tmp_path: Path, chan: Channel, url: str, *extra: str, **kw: object) -> Machine:
    m = Machine(tmp_path / "machine", **kw)  # type: ignore[arg-type]
    m.setup(chan.root_json, cmdline(url, *extra))
    return m


def run_cli(m: Machine) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["--root", str(m.root), "install-disk", "--no-network", "--staging", str(m.staging)]
        )
    return code, out.getvalue()


def test_installs_the_signed_image_through_tuf(tmp_path: Path, chan: Channel, url: str) -> None:
    m = machine(tmp_path, chan, url)
    image, bm = image_of(chan.builds / "node/v1")
    code, out = run_cli(m)
    assert code == 0, out
    assert mapped_equal(m.disk(), image, bm)
    assert "distbuild-install: verified vda: v1 installed, slot a boots next" in out
    with m.disk().open("rb") as f:
        table = gpt.read_table(gpt.Disk(f.fileno()), 1)
    assert [e.name for e in table.used()] == ["esp", "root-a", "root-b", "data"]
    assert not m.staging.exists(), "the staging copy is removed"


def test_fetches_only_the_mapped_ranges(tmp_path: Path, chan: Channel, url: str) -> None:
    m = machine(tmp_path, chan, url)
    http = Http()
    done = install(params(m.paths), m.paths, http, lambda _: None, m.staging)
    _, bm = image_of(chan.builds / "node/v1")
    assert done.received == bm.mapped_bytes
    assert bm.mapped_bytes < bm.image_size / 2, "the test image must have holes"


def refused(m: Machine, words: str) -> str:
    before = m.disk().read_bytes()
    code, out = run_cli(m)
    assert code != 0 and code != 70, out
    assert "distbuild-install: refused:" in out and words in out, out
    assert m.disk().read_bytes() == before, "a byte reached the disk before the refusal"
    return out


def test_tampered_image_on_the_server(tmp_path: Path, chan: Channel, url: str) -> None:
    served = chan.target_file(DISK)
    data = bytearray(served.read_bytes())
    data[6144 * 512 + 100] ^= 1  # one bit of root-a
    served.unlink()  # published files may be hard links shared with the build
    served.write_bytes(bytes(data))
    refused(machine(tmp_path, chan, url), "are not the signed ones")


def test_image_for_another_arch(tmp_path: Path, chan: Channel, url: str) -> None:
    relabel(chan, DISK, arch="arm64")
    refused(machine(tmp_path, chan, url), "signed as arch 'arm64', not 'amd64'")


def test_channel_without_this_arch(tmp_path: Path, chan: Channel, url: str) -> None:
    m = Machine(tmp_path / "machine", arch="arm64")
    m.setup(chan.root_json, cmdline(url))
    refused(m, "has no node disk image for arm64 board qemu")


def test_smaller_disk(tmp_path: Path, chan: Channel, url: str) -> None:
    m = machine(tmp_path, chan, url, disks={"vda": 8 * MIB})
    refused(m, "smaller than the image's")


def test_partitioned_disk_needs_install_wipe(tmp_path: Path, chan: Channel, url: str) -> None:
    image, bm = image_of(chan.builds / "node/v1")
    m = machine(tmp_path, chan, url)
    m.disk().write_bytes(image + bytes(16 * MIB - len(image)))  # an installed disk
    refused(m, "holds partitions (an MBR partition table, a GPT)")
    m.set_cmdline(cmdline(url, "install_wipe=1"))
    code, out = run_cli(m)
    assert code == 0, out
    assert "install_wipe=1: erasing" in out
    assert mapped_equal(m.disk(), image, bm)


def test_disk_choice(tmp_path: Path, chan: Channel, url: str) -> None:
    m = machine(tmp_path, chan, url, disks={"vda": 16 * MIB, "vdb": 16 * MIB})
    refused(m, "found 2 non-removable disks (vda, vdb)")
    m.set_cmdline(cmdline(url, "install_disk=/dev/vdb"))
    assert run_cli(m)[0] == 0
    image, bm = image_of(chan.builds / "node/v1")
    assert mapped_equal(m.disk("vdb"), image, bm) and not m.disk("vda").read_bytes().strip(b"\0")


def test_removable_and_loop_disks_are_not_chosen(tmp_path: Path, chan: Channel, url: str) -> None:
    m = machine(tmp_path, chan, url)
    m.add_disk("sdb", 16 * MIB, removable=True)
    m.add_disk("loop0", 16 * MIB)
    assert run_cli(m)[0] == 0
    assert not m.disk("sdb").read_bytes().strip(b"\0")


class PowerCut(Exception):
    pass


def cut_at_half(done: int, total: int) -> None:
    if done >= total // 2:
        raise PowerCut


def test_power_cut_at_half_leaves_no_bootable_disk_and_a_rerun_finishes(
    tmp_path: Path, chan: Channel, url: str
) -> None:
    m = machine(tmp_path, chan, url)
    image, bm = image_of(chan.builds / "node/v1")
    with pytest.raises(PowerCut):
        install(params(m.paths), m.paths, Http(), lambda _: None, m.staging, cut_at_half)
    disk = m.disk().read_bytes()
    assert disk[6144 * 512 : 6144 * 512 + 4096] == image[6144 * 512 : 6144 * 512 + 4096]
    # No partition table anywhere: no protective MBR, no primary, no backup GPT.
    assert disk[:4096] == bytes(4096)
    with m.disk().open("rb") as f, pytest.raises(gpt.GptError):
        gpt.read_table(gpt.Disk(f.fileno()), 1)
    assert disk[len(image) - 512 : len(image)] == bytes(512)
    # The boot partition's first block (its FAT boot sector) is not there either.
    assert disk[2048 * 512 : 2048 * 512 + 4096] == bytes(4096)
    # The next network boot sees a blank disk (no install_wipe=1 needed) and finishes.
    m.staging.unlink()
    assert netdisk.partitions(m.paths, netdisk.pick(m.paths, None)) == []
    code, out = run_cli(m)
    assert code == 0, out
    assert mapped_equal(m.disk(), image, bm)


def test_damaged_bmap_is_refused(tmp_path: Path, chan: Channel, url: str) -> None:
    served = chan.target_file(DISK + ".bmap")
    text = served.read_bytes().replace(b"<ImageSize> 12582912", b"<ImageSize> 12582913")
    served.unlink()
    served.write_bytes(text)
    refused(machine(tmp_path, chan, url), "bmap is not the one the channel signed")


def test_refusal_before_a_channel_is_asked(tmp_path: Path) -> None:
    m = Machine(tmp_path / "machine")
    m.setup(b"{}", "console=ttyS0 distbuild.channel_url=file:///etc/passwd")
    code, out = run_cli(m)
    assert code == 2 and "refused: the kernel command line lacks" in out


@contextlib.contextmanager
def plain_server(directory: Path) -> Iterator[str]:
    """A static server that ignores Range requests (Python's own: answers 200, whole files)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_without_range_requests_still_installs(tmp_path: Path, chan: Channel) -> None:
    with plain_server(chan.repo) as plain:
        m = machine(tmp_path, chan, plain)
        image, bm = image_of(chan.builds / "node/v1")
        code, out = run_cli(m)
    assert code == 0, out
    assert mapped_equal(m.disk(), image, bm)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("losetup"), reason="needs root")
def test_installs_onto_a_loop_device_after_a_power_cut(
    tmp_path: Path, chan: Channel, url: str
) -> None:
    backing = tmp_path / "loop-backing.img"
    with backing.open("wb") as f:
        f.truncate(16 * MIB)
    try:
        loop = subprocess.run(
            ["losetup", "--find", "--show", str(backing)],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
    except subprocess.CalledProcessError:
        pytest.skip("no loop device available here")
    try:
        m = machine(tmp_path, chan, url, f"install_disk={Path(loop).name}", disks={})
        (m.root / "dev").mkdir(parents=True, exist_ok=True)
        m.disk(Path(loop).name).symlink_to(loop)
        image, bm = image_of(chan.builds / "node/v1")
        with pytest.raises(PowerCut):
            install(params(m.paths), m.paths, Http(), lambda _: None, m.staging, cut_at_half)
        assert Path(loop).read_bytes()[:4096] == bytes(4096)
        code, out = run_cli(m)
        assert code == 0, out
        assert mapped_equal(Path(loop), image, bm)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)


class CutAtCommit(io.FileIO):
    """A disk that loses power as the primary partition table is about to be written."""

    def write(self, data: Any) -> int:
        if self.tell() == 0 and any(bytes(data)):
            raise PowerCut
        return super().write(data)


def test_power_cut_at_the_commit_on_a_disk_of_the_image_size(
    tmp_path: Path, chan: Channel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, bm = image_of(chan.builds / "node/v1")
    m = machine(tmp_path, chan, url, disks={"vda": len(image)})
    monkeypatch.setattr(netinstall, "open_disk", lambda device: CutAtCommit(device, "r+"))
    with pytest.raises(PowerCut):
        install(params(m.paths), m.paths, Http(), lambda _: None, m.staging)
    monkeypatch.undo()
    disk = m.disk().read_bytes()
    assert disk[2048 * 512 : 2048 * 512 + 4096] == image[2048 * 512 : 2048 * 512 + 4096]
    assert disk[:4096] == bytes(4096) and disk[-512:] == bytes(512), "no table, no backup"
    m.staging.unlink()
    code, out = run_cli(m)
    assert code == 0, out
    assert mapped_equal(m.disk(), image, bm)


def test_a_connection_cut_inside_a_range_is_tried_again(tmp_path: Path, chan: Channel) -> None:
    fault = Misbehave(path=r"\.disk\.img$", cut=1000, times=1)
    with fault_server(chan.repo, fault) as server:
        m = machine(tmp_path, chan, server.url)
        image, bm = image_of(chan.builds / "node/v1")
        code, out = run_cli(m)
    assert code == 0, out
    assert fault.hits > len(bm.extents), "the cut range was asked for again"
    assert mapped_equal(m.disk(), image, bm)


def test_a_network_boot_tries_again_and_picks_up_the_mended_server(
    tmp_path: Path, chan: Channel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = chan.target_file(DISK)
    good = served.read_bytes()
    bad = bytearray(good)
    bad[6144 * 512 + 100] ^= 1
    served.unlink()
    served.write_bytes(bytes(bad))
    pauses: list[float] = []

    def mend(seconds: float) -> None:  # the pause between tries: the server is fixed
        pauses.append(seconds)
        served.write_bytes(good)

    monkeypatch.setattr(netinstall.time, "sleep", mend)
    m = machine(tmp_path, chan, url)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = netinstall.run_install(m.paths, m.staging, network=False, tries=3, pause=7)
    text = out.getvalue()
    assert code == 0, text
    assert text.count("refused:") == 1 and "are not the signed ones" in text, text
    assert "trying again in 7 s (attempt 2 of 3)" in text and pauses == [7]
    image, bm = image_of(chan.builds / "node/v1")
    assert mapped_equal(m.disk(), image, bm)


def test_a_network_boot_stops_after_its_tries(
    tmp_path: Path, chan: Channel, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    relabel(chan, DISK, arch="arm64")
    monkeypatch.setattr(netinstall.time, "sleep", lambda _: None)
    m = machine(tmp_path, chan, url)
    before = m.disk().read_bytes()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = netinstall.run_install(m.paths, m.staging, network=False, tries=2, pause=0)
    text = out.getvalue()
    assert code not in (0, 70), text
    assert text.count("signed as arch 'arm64', not 'amd64'") == 2, text
    assert text.count("trying again") == 1 and m.disk().read_bytes() == before
