"""Provisioning files on the build host: checked by the node's own parser, then
baked into a root (``distbuild image --provision``) or written onto a disk
image's boot partition (``distbuild disk provision``), where the node reads
it on its next boot (distbuild/node/provision_apply.py).
"""

from __future__ import annotations

from pathlib import Path

from distbuild.core.bootctl.base import ImageFiles
from distbuild.core.errors import DistbuildError
from distbuild.disk.diskimg import partition_offsets
from distbuild.node.provision import NOCLOUD_FILES, PROVISION_FILE, parse_file
from distbuild.node.provision_apply import MAX_FILE

HINT = "see 'Provisioning a node' in the README for the keys a provisioning file takes"


def check_provision_file(path: Path) -> tuple[str, bytes]:
    """Read and check ``path`` as the node will; returns (its name on the boot partition, bytes).

    A ``#cloud-config`` file is NoCloud user-data; anything else is a
    ``distbuild-provision.yaml``."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise DistbuildError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise DistbuildError(f"{path} is larger than {MAX_FILE} bytes", hint=HINT)
    try:
        parse_file(str(path), data)
    except DistbuildError as e:
        raise DistbuildError(e.message, hint=e.hint or HINT) from None
    return ("user-data" if data.startswith(b"#cloud-config") else PROVISION_FILE), data


def boot_files(disk: Path) -> ImageFiles:
    """The boot partition (GPT label esp or boot) of a disk image, edited with mtools."""
    parts = partition_offsets(disk)
    for label in ("esp", "boot"):
        if label in parts:
            return ImageFiles(disk, parts[label][0])
    raise DistbuildError(
        f"{disk} has no boot partition (GPT label esp or boot)",
        hint="is it a disk image built by distbuild?",
    )


def write_provision(disk: Path, source: Path) -> str:
    """Check ``source``, then put it on the boot partition of ``disk``, replacing any other.

    Returns the name it has there."""
    name, data = check_provision_file(source)
    files = boot_files(disk)
    for other in (PROVISION_FILE, *NOCLOUD_FILES):
        if other != name:
            files.remove(other)
    files.write(name, data)
    return name
