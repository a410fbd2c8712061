"""The running node: which slot booted, where the slots and the boot partition are.

Partitions are found by their GPT labels (``root-a``, ``root-b``, ``esp`` or
``boot``) through ``/sys/class/block/*/uevent`` (``PARTNAME=``), which works
with busybox's mdev as well as udev. Each can be overridden in the config
(tests point them at files and directories).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distbuild.core.bootctl.base import BootControl, DirFiles, booted_slot, open_bootctl
from distbuild.core.errors import DistbuildError
from distbuild.node.config import BOOT_MOUNT, Config, NodePaths


def read_cmdline(paths: NodePaths) -> str:
    try:
        return paths.cmdline.read_text()
    except OSError:
        return ""


def booted(paths: NodePaths) -> str | None:
    """The slot the running system booted from (``distbuild.slot=``)."""
    return booted_slot(read_cmdline(paths))


def partition_by_label(paths: NodePaths, label: str) -> Path | None:
    """``/dev/<name>`` of the partition whose GPT label is ``label``."""
    try:
        entries = sorted(paths.sys_block.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            uevent = (entry / "uevent").read_text()
        except OSError:
            continue
        fields = dict(line.partition("=")[::2] for line in uevent.splitlines())
        if fields.get("PARTNAME") == label and fields.get("DEVNAME"):
            return paths.at("/dev/" + fields["DEVNAME"])
    return None


def slot_device(config: Config, paths: NodePaths, slot: str) -> Path:
    """The block device (or stand-in file) of a root slot."""
    configured = config.slot_device(slot)
    if configured:
        return paths.at(configured)
    found = partition_by_label(paths, f"root-{slot}")
    if found is None:
        raise DistbuildError(
            f"no partition labelled root-{slot}",
            hint=f"set slot_{slot} in the updater config to the slot's block device",
        )
    return found


def node_id(config: Config, paths: NodePaths) -> str:
    """A stable identity: the configured one, /etc/machine-id, or the hostname."""
    if config.node_id:
        return config.node_id
    for path in (paths.machine_id, paths.hostname):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    raise DistbuildError(
        "this node has no identity (no /etc/machine-id or /etc/hostname)",
        hint="set node_id in the updater config",
    )


def app_id(ident: str) -> str:
    """An updater-specific id derived from the machine id (as Zincati does), not the id itself."""
    return hashlib.sha256(f"distbuild-update:{ident}".encode()).hexdigest()[:32]


@contextmanager
def boot_control(config: Config, paths: NodePaths, chain: str) -> Iterator[BootControl]:
    """The boot chain's control over the boot partition, mounted for the block if needed."""
    cmdline = read_cmdline(paths)
    if config.boot_dir:
        directory = paths.at(config.boot_dir)
        if not directory.is_dir():
            raise DistbuildError(f"boot_dir {directory} is not a directory")
        yield open_bootctl(chain, DirFiles(directory), cmdline)
        return
    device = partition_by_label(paths, "esp") or partition_by_label(paths, "boot")
    if device is None:
        raise DistbuildError(
            "no boot partition (GPT label esp or boot)",
            hint="set boot_dir in the updater config to where it is mounted",
        )
    mounted = _mount_point(paths, device)
    if mounted is not None:
        yield open_bootctl(chain, DirFiles(mounted), cmdline)
        return
    from distbuild.core.run import run

    mount = paths.at(BOOT_MOUNT)
    mount.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "vfat", "-o", "noatime,sync", device, mount])
    try:
        yield open_bootctl(chain, DirFiles(mount), cmdline)
    finally:
        run(["umount", mount], check=False)


def _mount_point(paths: NodePaths, device: Path) -> Path | None:
    try:
        lines = paths.mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == str(device):
            return Path(fields[1].replace("\\040", " "))
    return None
