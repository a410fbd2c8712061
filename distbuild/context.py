"""What a build is asked to do: the options every stage reads (no state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distbuild.core.arch import Arch
from distbuild.rootfs.install_updater import UpdaterSetup


@dataclass(frozen=True)
class BuildOptions:
    project: Path
    image: str
    arches: tuple[Arch, ...]
    out: Path
    cache: Path
    version: str | None = None
    source_date_epoch: int | None = None
    mirror: str | None = None
    compression_level: int = 6
    update_lock: bool = False
    locked: bool = False  # a missing or stale lock is an error instead of being re-resolved
    updater: UpdaterSetup | None = None  # the channel a node image's updater follows
    allow_outside: tuple[Path, ...] = ()  # paths outside the project definitions may read
    provision: bytes | None = None  # a checked provisioning file baked into the node's root
