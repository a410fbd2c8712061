"""Helpers for the network installer tests: a disk build, a channel, a netbooted machine.

* :func:`make_disk_build` writes a build directory as ``distbuild image`` does
  for a board's ``disk`` output: a small sparse GPT image (esp, root-a, root-b,
  data; data in some blocks, holes elsewhere) and its bmap from ``bmaptool
  create``, listed with ``"board"`` in build.json; the project's own publish
  turns it into a real TUF channel.
* :class:`Machine` is the netbooted installer's view under a temporary root:
  the node image's release file and baked root.json, /proc/cmdline, a
  /sys/block with its disks, and files standing in for the disks.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import publish
from distbuild.core import bmap
from distbuild.node.config import NodePaths
from tests.support.channel import _artifact as channel_artifact
from tests.support.channel import channel
from tests.support.node import payload

MIB = 1 << 20
DISK_SIZE = 12 * MIB
# sfdisk lines of the image: the layout of a distbuild disk (DESIGN.md §4), in small.
LAYOUT = """label: gpt
start=2048, size=4096, type=uefi, name=esp
size=4096, type=linux, name=root-a
size=4096, type=linux, name=root-b
type=linux, name=data
"""


def make_disk_image(path: Path, version: str, arch: str) -> Path:
    """A sparse GPT disk image with bytes in its ESP and root-a, and its bmap next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(DISK_SIZE)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
        input=LAYOUT.encode(),
        check=True,
        capture_output=True,
    )
    with path.open("r+b") as f:
        f.seek(2048 * 512)  # the ESP: a boot sector's worth and some files
        f.write(payload(f"esp-{version}", arch, 256 << 10))
        f.seek(6144 * 512)  # root-a
        f.write(payload(version, arch, MIB + 12345))
    bmap_path = path.with_name(path.name + ".bmap")
    subprocess.run(
        ["bmaptool", "create", "-o", str(bmap_path), str(path)], check=True, capture_output=True
    )
    return path


def _artifact(directory: Path, path: Path, arch: str, kind: str, board: str) -> dict[str, object]:
    return {**channel_artifact(directory, arch, kind, path), "board": board}


def make_disk_build(
    out: Path, version: str, arch: str = "amd64", board: str = "qemu", image: str = "node"
) -> Path:
    """A build directory with one board's ``disk`` output; returns its directory."""
    directory = out / image / version
    disk = make_disk_image(directory / arch / "disk" / board / "disk.img", version, arch)
    artifacts = [
        _artifact(directory, disk, arch, "disk", board),
        _artifact(directory, disk.with_name("disk.img.bmap"), arch, "disk-bmap", board),
    ]
    record = {"image": image, "version": version, "source_date_epoch": 0, "artifacts": artifacts}
    (directory / "build.json").write_text(json.dumps(record, indent=2))
    return directory


def publish_disk(repo: Path, keys: KeyStore, builds: Path, version: str, **kw: str) -> Path:
    """Build and publish a disk release into channel ``stable``; the build directory."""
    build = make_disk_build(builds, version, **kw)
    publish(repo, channel("stable"), build, keys)
    return build


def image_of(build: Path, arch: str = "amd64", board: str = "qemu") -> tuple[bytes, bmap.Bmap]:
    disk = build / arch / "disk" / board / "disk.img"
    return disk.read_bytes(), bmap.load(disk.with_name("disk.img.bmap"))


@dataclass
class Machine:
    """A netbooted machine: the installer's root, its kernel command line and disks."""

    root: Path
    arch: str = "amd64"
    disks: dict[str, int] = field(default_factory=lambda: {"vda": 16 * MIB})

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.root)

    def setup(self, root_json: bytes, cmdline: str) -> None:
        """The node image's files, the command line, and blank disks (sparse files)."""
        p = self.paths
        p.trust_anchor.parent.mkdir(parents=True, exist_ok=True)
        p.trust_anchor.write_bytes(root_json)
        p.release.parent.mkdir(parents=True, exist_ok=True)
        p.release.write_text(f"IMAGE=node\nVERSION=v0\nARCH={self.arch}\nEPOCH=0\n")
        self.set_cmdline(cmdline)
        for name, size in self.disks.items():
            self.add_disk(name, size)

    def set_cmdline(self, text: str) -> None:
        self.paths.cmdline.parent.mkdir(parents=True, exist_ok=True)
        self.paths.cmdline.write_text(text + "\n")

    def add_disk(self, name: str, size: int, removable: bool = False) -> Path:
        sysdir = self.root / "sys/block" / name
        sysdir.mkdir(parents=True, exist_ok=True)
        (sysdir / "removable").write_text("1\n" if removable else "0\n")
        (sysdir / "size").write_text(f"{size // 512}\n")
        dev = self.disk(name)
        dev.parent.mkdir(parents=True, exist_ok=True)
        with dev.open("wb") as f:
            f.truncate(size)
        return dev

    def disk(self, name: str = "vda") -> Path:
        return self.root / "dev" / name

    @property
    def staging(self) -> Path:
        return self.root / "run/distbuild-install/disk.img"


def cmdline(url: str, *extra: str, board: str = "qemu") -> str:
    """A netboot installer's kernel command line."""
    words = [
        "console=ttyS0",
        f"distbuild.channel_url={url}",
        "distbuild.channel=stable",
        "distbuild.image=node",
        f"distbuild.board={board}",
        *extra,
    ]
    return " ".join(words)


def mapped_equal(disk: Path, image: bytes, bm: bmap.Bmap) -> bool:
    """Whether ``disk`` holds ``image``'s bytes in every mapped extent."""
    with disk.open("rb") as f:
        for e in bm.extents:
            f.seek(e.offset)
            if f.read(e.length) != image[e.offset : e.offset + e.length]:
                return False
    return True
