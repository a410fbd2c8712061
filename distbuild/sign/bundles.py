"""Sigstore bundles of a build's artifacts, published next to them.

CI signs each artifact listed in ``build.json`` and writes its bundle to
``<build>/sigstore/<artifact path>.sigstore.json`` (outside the OCI layout,
whose blobs directory must hold blobs only); a bundle written by
``sigstore sign`` with its default name, ``<artifact>.sigstore.json`` next to
the artifact, is found too. ``publish`` adds each bundle as the target
``<image>/<version>/<arch>/<file>.sigstore.json``, beside the file it signs
(distbuild.channel.sources); the registry side attaches the index's bundle
as a referrer (distbuild.oci.release).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.record import Artifact

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


def checked_bundle(directory: Path, artifact: Artifact, what: str) -> Path | None:
    """The bundle of ``artifact`` if signed; DistbuildError if it signs other bytes.

    ``what`` names the artifact in the error (e.g. "the image index").
    """
    bundle = bundle_path(directory, artifact)
    if bundle is None:
        return None
    said = signed_digest(bundle)
    if said is not None and said != artifact.sha256:
        raise DistbuildError(
            f"{bundle} signs sha256 {said}, but {what} is sha256 {artifact.sha256}",
            hint=f"the bundle belongs to another build; sign {what} again",
        )
    return bundle
