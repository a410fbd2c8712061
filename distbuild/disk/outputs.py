"""The ``root`` and ``disk`` outputs, as listed in :data:`distbuild.build.OUTPUTS`.

Layout in a build (paths in build.json are what tools use):

- ``<arch>/root/root.img`` (kind ``root``), ``linux`` (``kernel``),
  ``initrd`` (``initrd``), ``boot.json`` (``boot``), and for every board of
  the arch with a device tree ``<arch>/root/<board>/board.dtb`` (``dtb``,
  with its board): one root payload serves every board of an arch.
- ``<arch>/disk/<board>/disk.img`` (kind ``disk``), ``disk.img.bmap``
  (``disk-bmap``), one pair per board built, each with its board.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distbuild.bootchain.uboot import BOARD_DTB
from distbuild.context import ArchBuild, BuildDir
from distbuild.disk import boards, trees
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
        *_board_dtbs(ctx, out, d),
    ]


def _board_dtbs(ctx: ArchBuild, out: BuildDir, d: Path) -> list[Artifact]:
    """Every board's device tree, so one release updates every board of the arch."""
    if not any(b.device_tree for b in ctx.recipe.boards):
        return []
    kernel = trees.kernel_tree(ctx)
    found = []
    for board in ctx.recipe.boards:
        dtb = boards.kernel_dtb(board, kernel.root, kernel.version)
        if dtb is not None:
            dest = _place(dtb, d / board.name / BOARD_DTB)
            found.append(out.artifact(ctx.arch.name, "dtb", dest, board=board.name))
    return found


def build_disk_output(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    payload = root_payload(ctx)
    arch = ctx.arch.name
    artifacts = []
    for board in ctx.boards:
        d = out.path / arch / "disk" / board.name
        d.mkdir(parents=True, exist_ok=True)
        disk = build_disk(ctx, payload, d / "disk.img", board)
        bmap = disk.with_name(disk.name + ".bmap")
        artifacts += [
            out.artifact(arch, "disk", disk, board=board.name),
            out.artifact(arch, "disk-bmap", bmap, board=board.name),
        ]
    return artifacts
