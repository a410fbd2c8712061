"""Offline A/B operations on a disk image: what the node updater does, on a file.

Writing a slot follows DESIGN.md §4: mark the slot unbootable, write its root
partition, read the bytes back and check them against the build record,
then install its kernel, initramfs and entry (still unbootable). Making it
boot next is a separate step (:meth:`BootControl.set_next`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distbuild.bootchain import get_chain
from distbuild.core.bootctl.base import BootControl, ImageFiles, SlotBoot, check_slot, open_bootctl
from distbuild.core.errors import DistbuildError
from distbuild.disk.diskimg import partition_offsets, sha256_range
from distbuild.model.recipe import Recipe
from distbuild.record import load_record

CHUNK = 1 << 20


@dataclass(frozen=True)
class Payload:
    """A build's root output for one arch, found through its build record."""

    version: str
    root: Path
    root_sha256: str
    kernel: Path
    initrd: Path
    cmdline: str

    def boot(self) -> SlotBoot:
        return SlotBoot(
            self.version, self.kernel.read_bytes(), self.initrd.read_bytes(), self.cmdline
        )


def payload_from_build(build: Path, arch: str) -> Payload:
    record, base = load_record(build)
    found = {}
    for kind in ("root", "kernel", "initrd", "boot"):
        arts = record.find(kind, arch)
        if not arts:
            raise DistbuildError(
                f"the build {base} has no {kind!r} artifact for {arch}",
                hint="build the image with the 'root' output for this arch",
            )
        found[kind] = arts[0]
    meta = json.loads((base / found["boot"].path).read_text())
    return Payload(
        version=record.version,
        root=base / found["root"].path,
        root_sha256=found["root"].sha256,
        kernel=base / found["kernel"].path,
        initrd=base / found["initrd"].path,
        cmdline=meta["cmdline"],
    )


def disk_bootctl(disk: Path, recipe: Recipe) -> BootControl:
    """Boot control on the boot partition inside ``disk`` (offline: no booted slot)."""
    chain = get_chain(recipe.boot_chain)
    parts = partition_offsets(disk)
    if chain.partition_label not in parts:
        raise DistbuildError(
            f"{disk} has no {chain.partition_label!r} partition for the {chain.name} boot chain",
            hint=f"is it a disk image for {recipe.arch.name}?",
        )
    return open_bootctl(chain.name, ImageFiles(disk, parts[chain.partition_label][0]), "")


def write_slot(disk: Path, recipe: Recipe, payload: Payload, slot: str) -> None:
    """Write ``payload`` into ``slot`` of ``disk``, verified, and leave it unbootable."""
    check_slot(slot)
    parts = partition_offsets(disk)
    label = f"root-{slot}"
    if label not in parts:
        raise DistbuildError(f"{disk} has no partition {label!r}", hint="is it a distbuild disk?")
    offset, capacity = parts[label]
    size = payload.root.stat().st_size
    if size > capacity:
        raise DistbuildError(
            f"the root image ({size >> 20} MiB) is larger than slot {slot} ({capacity >> 20} MiB)",
            hint="build the disk with a larger disk.root_mib, or a smaller image",
        )
    bootctl = disk_bootctl(disk, recipe)
    bootctl.mark_unbootable(slot)
    with payload.root.open("rb") as src, disk.open("r+b") as dst:
        dst.seek(offset)
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        dst.flush()
        written = sha256_range(dst, offset, size)
    if written != payload.root_sha256:
        raise DistbuildError(
            f"slot {slot} reads back differently from the root image; it stays unbootable",
            hint="check the disk image (or device) for errors and write it again",
        )
    bootctl.install(slot, payload.boot())
