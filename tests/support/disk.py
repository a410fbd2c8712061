"""A small project for the root/disk output tests: a copy of the checkout's
recipes and images, a tiny image definition (kernel and busybox), recipe edits,
a build, and a check that a failed one left nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

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
