"""Sigstore bundles of a build's artifacts, published next to them.

CI signs each artifact listed in ``build.json`` and writes its bundle to
``<build>/sigstore/<artifact path>.sigstore.json`` (outside the OCI layout,
whose blobs directory must hold blobs only); a bundle written by
``sigstore sign`` with its default name, ``<artifact>.sigstore.json`` next to
the artifact, is found too. ``publish`` adds each bundle as the target
``<image>/<version>/<arch>/<file>.sigstore.json``, beside the file it signs.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path

from distbuild.channel.hooks import NewTarget, target_source
from distbuild.core.errors import DistbuildError
from distbuild.record import Artifact, BuildRecord
from distbuild.rootfs.fetch import sha256_file

SUFFIX = ".sigstore.json"
KIND = "sigstore-bundle"
SIGSTORE_DIR = "sigstore"


def bundle_path(directory: Path, artifact: Artifact) -> Path | None:
    """The bundle of ``artifact`` in a build directory, if it was signed."""
    for candidate in (
        directory / SIGSTORE_DIR / (artifact.path + SUFFIX),
        directory / (artifact.path + SUFFIX),
    ):
        if candidate.is_file():
            return candidate
    return None


def signed_digest(bundle: Path) -> str | None:
    """The sha256 (hex) a message-signature bundle says it signs; None for DSSE bundles."""
    try:
        data = json.loads(bundle.read_bytes())
        digest = data.get("messageSignature", {}).get("messageDigest")
        if not digest:
            return None
        if digest.get("algorithm") != "SHA2_256":
            return None
        return base64.b64decode(digest["digest"], validate=True).hex()
    except (OSError, ValueError, AttributeError, KeyError, TypeError, binascii.Error) as e:
        raise DistbuildError(
            f"{bundle} is not a readable Sigstore bundle ({e.__class__.__name__})",
            hint="sign the artifact again ('python -m sigstore sign --bundle …') or remove it",
        ) from None


@target_source
def bundle_targets(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
    """A ``<file>.sigstore.json`` target for every published artifact that CI signed."""
    from distbuild.channel.publish import SKIP_ARCHES, SKIP_KINDS

    for a in record.artifacts:
        if a.kind in SKIP_KINDS or a.arch in SKIP_ARCHES:
            continue
        bundle = bundle_path(directory, a)
        if bundle is None:
            continue
        said = signed_digest(bundle)
        if said is not None and said != a.sha256:
            raise DistbuildError(
                f"{bundle} signs sha256 {said}, but {a.path} is {a.sha256}",
                hint="the bundle belongs to another build of this file; sign the artifact again",
            )
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
        )
