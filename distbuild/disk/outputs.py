"""The ``root`` and ``disk`` outputs, as listed in :data:`distbuild.build.OUTPUTS`.

Layout in a build (paths in build.json are what tools use):

- ``<arch>/root/root.img`` (kind ``root``), ``linux`` (``kernel``),
  ``initrd`` (``initrd``), ``boot.json`` (``boot``)
- ``<arch>/disk/disk.img`` (kind ``disk``), ``disk.img.bmap`` (``disk-bmap``)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distbuild.context import ArchBuild, BuildDir
from distbuild.disk.diskimg import build_disk
from distbuild.disk.rootimg import root_payload
from distbuild.record import Artifact


def _place(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def build_root(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    payload = root_payload(ctx)
    d = out.path / ctx.arch.name / "root"
    arch = ctx.arch.name
    return [
        out.artifact(arch, "root", _place(payload.image, d / "root.img")),
        out.artifact(arch, "kernel", _place(payload.kernel, d / "linux")),
        out.artifact(arch, "initrd", _place(payload.initrd, d / "initrd")),
        out.artifact(arch, "boot", _place(payload.image.with_name("boot.json"), d / "boot.json")),
    ]


def build_disk_output(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    payload = root_payload(ctx)
    d = out.path / ctx.arch.name / "disk"
    d.mkdir(parents=True, exist_ok=True)
    disk = build_disk(ctx, payload, d / "disk.img")
    bmap = disk.with_name(disk.name + ".bmap")
    return [
        out.artifact(ctx.arch.name, "disk", disk),
        out.artifact(ctx.arch.name, "disk-bmap", bmap),
    ]
