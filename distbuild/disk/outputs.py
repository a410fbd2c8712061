"""The ``root`` and ``disk`` outputs, registered into the build.

Layout in a build (paths in build.json are what tools use):

- ``<arch>/root/root.img`` (kind ``root``), ``linux`` (``kernel``),
  ``initrd`` (``initrd``), ``boot.json`` (``boot``)
- ``<arch>/disk/disk.img`` (kind ``disk``), ``disk.img.bmap`` (``disk-bmap``)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distbuild.build import OUTPUT_BUILDERS, ArchBuild
from distbuild.disk.diskimg import build_disk
from distbuild.disk.rootimg import root_payload
from distbuild.disk.trees import BOOT_LOCK, boot_packages
from distbuild.locks import EXTRA_LOCKS
from distbuild.record import Artifact
from distbuild.rootfs.fetch import sha256_file


def _artifact(staging: Path, arch: str, kind: str, path: Path) -> Artifact:
    return Artifact(
        arch, kind, str(path.relative_to(staging)), sha256_file(path), path.stat().st_size
    )


def _place(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def build_root(ctx: ArchBuild, staging: Path) -> list[Artifact]:
    payload = root_payload(ctx)
    d = staging / ctx.arch.name / "root"
    arch = ctx.arch.name
    return [
        _artifact(staging, arch, "root", _place(payload.image, d / "root.img")),
        _artifact(staging, arch, "kernel", _place(payload.kernel, d / "linux")),
        _artifact(staging, arch, "initrd", _place(payload.initrd, d / "initrd")),
        _artifact(
            staging, arch, "boot", _place(payload.image.with_name("boot.json"), d / "boot.json")
        ),
    ]


def build_disk_output(ctx: ArchBuild, staging: Path) -> list[Artifact]:
    payload = root_payload(ctx)
    d = staging / ctx.arch.name / "disk"
    d.mkdir(parents=True, exist_ok=True)
    disk = build_disk(ctx, payload, d / "disk.img")
    bmap = disk.with_name(disk.name + ".bmap")
    return [
        _artifact(staging, ctx.arch.name, "disk", disk),
        _artifact(staging, ctx.arch.name, "disk-bmap", bmap),
    ]


OUTPUT_BUILDERS["root"] = build_root
OUTPUT_BUILDERS["disk"] = build_disk_output
EXTRA_LOCKS["root"] = EXTRA_LOCKS["disk"] = (BOOT_LOCK, boot_packages)
