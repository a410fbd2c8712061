"""The target sources of ``distbuild publish``: what of a build becomes channel targets.

* :func:`record_targets`: the build record's file artifacts (not OCI content,
  which goes to a registry, nor the netboot output, nor arch ``all``); an artifact with a ``board``
  becomes ``<image>/<version>/<arch>/<board>/<file>`` (distbuild.core.releases);
* :func:`bundle_targets`: CI's Sigstore bundle of each of those files, as
  ``<file>.sigstore.json`` beside the file it signs (see distbuild.sign.bundles).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from distbuild.channel.hooks import NewTarget
from distbuild.record import NETBOOT_KINDS, Artifact, BuildRecord
from distbuild.rootfs.fetch import sha256_file
from distbuild.sign.bundles import KIND, SUFFIX, checked_bundle

# OCI content goes to registries; "all" artifacts (the OCI index) have no arch.
# The netboot output is what firmware fetches (TFTP/HTTP from ``distbuild
# netboot``'s directory), not nodes through TUF; its armv7 ``linux``/``initrd``
# would also take the root output's target names.
SKIP_KINDS = frozenset({"oci", "oci-index"}) | NETBOOT_KINDS
SKIP_ARCHES = frozenset({"all"})


def published_artifacts(record: BuildRecord) -> Iterator[Artifact]:
    """The artifacts of a build that become channel targets."""
    for a in record.artifacts:
        if a.kind not in SKIP_KINDS and a.arch not in SKIP_ARCHES:
            yield a


def record_targets(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
    """The build record's file artifacts, except OCI content and arch ``all``."""
    for a in published_artifacts(record):
        yield NewTarget(
            image=record.image,
            version=record.version,
            arch=a.arch,
            kind=a.kind,
            source=directory / a.path,
            sha256=a.sha256,
            length=a.size,
            board=a.board,
        )


def bundle_targets(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
    """A ``<file>.sigstore.json`` target for every published artifact that CI signed."""
    for a in published_artifacts(record):
        bundle = checked_bundle(directory, a, a.path)
        if bundle is None:
            continue
        yield NewTarget(
            image=record.image,
            version=record.version,
            arch=a.arch,
            kind=KIND,
            source=bundle,
            sha256=sha256_file(bundle),
            length=bundle.stat().st_size,
            file=Path(a.path).name + SUFFIX,
            extra={"signs": Path(a.path).name},
            board=a.board,  # beside the file it signs, in the board's directory
        )
