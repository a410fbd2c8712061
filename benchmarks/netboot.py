#!/usr/bin/env python3
"""Network install benchmark: a diskless machine, from power-on to its installed node blessed.

Per arch it builds the node image with the ``netboot`` output (following a
channel of the benchmark's own, served in a network namespace on
10.0.2.2:8080 as the guest sees it), publishes it, lays out the TFTP
directory (``distbuild netboot``) and, under TCG:

1. powers on the diskless machine with a blank 1 GiB virtio disk: amd64 OVMF
   and arm64 AAVMF PXE-boot the installer UKI, armv7 U-Boot DHCP/TFTP-boots
   its script, kernel and initramfs (qemu's user-net TFTP); the installer
   brings up the network, fetches the disk image through TUF, writes and
   verifies it, reboots (qemu exits: ``-no-reboot``);
2. powers on again without a network: the installed disk boots to
   ``distbuild-os: slot a marked good``.

It reports the phases (seconds from each power-on), the total from the first
power-on to ``marked good`` (both runs' times added), and the bytes the
channel server sent for the disk image against the image's mapped bytes (its
bmap; target <= 1.05x). The machines run one after another.

Prints a markdown table. Run as root: ``python benchmarks/netboot.py [--arch amd64,arm64,armv7]``
(``--keep DIR`` keeps builds, consoles and the channel there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distbuild.channel.admin import create_channel  # noqa: E402
from distbuild.channel.keys import KeyStore  # noqa: E402
from distbuild.channel.publish import publish  # noqa: E402
from distbuild.channel.serve import serving  # noqa: E402
from distbuild.core import bmap  # noqa: E402
from distbuild.core.arch import get_arch, parse_arches  # noqa: E402
from distbuild.model.recipe import load_recipe  # noqa: E402
from tests.support.channel import channel, make_keys  # noqa: E402
from tests.support.netinstall_guest import Machine  # noqa: E402
from tests.support.netns import netns  # noqa: E402

EPOCH = 1764201600
IMAGE = "node-netinstall"
PORT = 8080
MIB = 1 << 20
HOW = {"amd64": "OVMF PXE", "arm64": "AAVMF PXE", "armv7": "U-Boot DHCP/TFTP"}


def distbuild(*args: str | Path) -> None:
    cmd = [sys.executable, "-m", "distbuild.cli.main", *map(str, args)]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def project(work: Path) -> Path:
    """A copy of recipes/, images/ and channels/ with the node image's netboot variant."""
    dest = work / "project"
    for sub in ("recipes", "images", "channels"):
        if (REPO / sub).is_dir():
            shutil.copytree(REPO / sub, dest / sub)
    text = (dest / "images/node.yaml").read_text()
    text = text.replace("name: node\n", f"name: {IMAGE}\n", 1)
    text = text.replace("outputs: [oci, root, disk]", "outputs: [root, disk, netboot]", 1)
    (dest / "images" / f"{IMAGE}.yaml").write_text(text)
    return dest


def build(work: Path, proj: Path, repo: Path, keys: KeyStore, arch: str) -> Path:
    name = f"bench-{arch}"
    create_channel(repo, channel(name), keys)
    out = work / "out" / arch
    distbuild(
        "--project", proj, "image", "--arch", arch, "--image", IMAGE, "--out", out,
        "--release", "1.0.0", "--source-date-epoch", str(EPOCH),
        "--channel-url", f"http://10.0.2.2:{PORT}", "--channel", name,
        "--trust-root", repo / name / "metadata" / "1.root.json",
    )  # fmt: skip
    directory = out / IMAGE / "1.0.0"
    publish(repo, channel(name), directory, keys)
    return directory


def measure(work: Path, proj: Path, repo: Path, keys: KeyStore, arch: str) -> dict[str, object]:
    directory = build(work, proj, repo, keys, arch)
    site = work / arch / "site"
    distbuild("netboot", directory, "--dir", site, "--net", "10.0.2.0/24", "--board", "qemu")
    machine = Machine(load_recipe(REPO, get_arch(arch)), site, work / arch)
    with netns(f"distbuild-bench-netboot-{os.getpid()}") as ns, ExitStack() as stack:
        with ns.entered():
            server = stack.enter_context(serving(repo, PORT))
        machine.install(ns)
        fetched = sum(t.sent for t in server.traffic.requests if t.path.endswith(".disk.img"))
    machine.boot()
    disk = directory / arch / "disk" / "qemu" / "disk.img"
    mapped = bmap.load(disk.with_name("disk.img.bmap")).mapped_bytes
    t = machine.timings
    return {
        "arch": arch,
        "how": HOW[arch],
        "installer started": t["installer started"],
        "network up": t["network up"],
        "rebooting": t["rebooting"],
        "install run": t["install exited"],
        "booted": t["booted"],
        "marked good": t["marked good"],
        "total": t["install exited"] + t["marked good"],
        "fetched": fetched,
        "mapped": mapped,
    }


def table(rows: list[dict[str, object]]) -> None:
    print(
        "| arch | network boot | power-on → installer started | → network up | → installed, "
        "rebooting | install run (qemu exit) | disk boot → booted | → marked good | "
        "power-on → marked good | disk image fetched | mapped | fetched / mapped |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        secs = [f"{r[k]:.1f} s" for k in ("installer started", "network up", "rebooting")]
        secs += [f"{r[k]:.1f} s" for k in ("install run", "booted", "marked good", "total")]
        fetched, mapped = r["fetched"], r["mapped"]
        assert isinstance(fetched, int) and isinstance(mapped, int)
        print(
            f"| {r['arch']} | {r['how']} | {' | '.join(secs)} | {fetched / MIB:.1f} MiB | "
            f"{mapped / MIB:.1f} MiB | {fetched / mapped:.3f}x |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="all")
    p.add_argument("--keep", type=Path, help="keep builds, consoles and the channel here")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="distbuild-bench-netboot-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        proj = project(work)
        keys = make_keys(work / "keys")
        rows = []
        for arch in parse_arches([args.arch]):
            rows.append(measure(work, proj, work / "repo", keys, arch.name))
            print(rows[-1], file=sys.stderr)
        table(rows)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
