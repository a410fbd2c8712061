"""A small project for the root/disk output tests: a copy of the checkout's
recipes and images, a tiny image definition (kernel and busybox), recipe edits,
a build, and a check that a failed one left nothing behind."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, image_args, run_cli

TINY = """\
include: include/base.yaml
name: tiny
description: a kernel and busybox, for error tests
outputs: [root, disk]
kernel: true
busybox_links: true
packages: [busybox]
"""


def project_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return dest


def build(project: Path, out: Path, image: str, arch: str = "amd64") -> int:
    return run_cli(*image_args(project, out, image, arch))


def edit_recipe(project: Path, arch: str, change: dict[str, object]) -> None:
    path = project / "recipes" / f"{arch}.yaml"
    doc = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(yaml.safe_dump(doc))


def nothing_written(out: Path) -> bool:
    return not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def gpt_with_esp(tmp_path: Path, tail: str = "") -> Path:
    """A GPT disk image whose first partition (label esp) is FAT, 40 MiB at 1 MiB.

    ``tail``: more sfdisk partition lines after it (the image is 48 MiB then, else 42)."""
    if not (shutil.which("sfdisk") and shutil.which("mkfs.vfat") and shutil.which("mcopy")):
        pytest.skip("needs fdisk, dosfstools and mtools")
    esp, disk = tmp_path / "esp.img", tmp_path / "disk.img"
    with esp.open("wb") as f:
        f.truncate(40 << 20)
    subprocess.run(["mkfs.vfat", "-F", "32", str(esp)], check=True, capture_output=True)
    with disk.open("wb") as f:
        f.truncate((48 if tail else 42) << 20)
    layout = "label: gpt\nstart=2048, size=81920, name=esp\n" + tail
    subprocess.run(["sfdisk", "-q", str(disk)], input=layout, text=True, check=True)
    with disk.open("r+b") as f:
        f.seek(1 << 20)
        f.write(esp.read_bytes())
    return disk
