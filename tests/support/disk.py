"""A small project for the root/disk output tests: a copy of the checkout's
recipes and images, a tiny image definition (kernel and busybox), a build."""

from __future__ import annotations

import shutil
from pathlib import Path

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
