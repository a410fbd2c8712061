"""OCI 1.1 referrers: SBOMs and signatures attached to an image index in a registry.

Each attachment is an OCI image manifest with an ``artifactType``, the empty
config (``application/vnd.oci.empty.v1+json``), the file as its one layer,
and ``subject`` = the image index's descriptor. It never enters the index
itself, so a multi-arch index stays exactly the per-arch manifests (no
``unknown/unknown`` platform entries, as in-index attestations would add).

Discovery follows distribution-spec 1.1: where the registry serves the
referrers API (``GET /v2/<name>/referrers/<digest>`` answers an index) it
keeps the list itself; where it does not (404, e.g. docker-registry 2.8),
the client maintains the fallback tag ``sha256-<hex>``: an image index whose
``manifests`` are the referrers' descriptors.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distbuild.core.errors import DistbuildError, RegistryError
from distbuild.oci.layout import INDEX, MANIFEST, canonical
from distbuild.oci.registry import RegistryClient

EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DATA = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_DATA).hexdigest()
EMPTY_DESC: dict[str, Any] = {
    "mediaType": EMPTY,
    "digest": EMPTY_DIGEST,
    "size": len(EMPTY_DATA),
    "data": base64.b64encode(EMPTY_DATA).decode(),
}
SBOM_TYPE = "application/spdx+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
ARCH = "dev.distbuild.arch"


@dataclass(frozen=True)
class Attachment:
    """A file to attach to a subject, as one artifact manifest."""

    artifact_type: str
    path: Path
    title: str
    annotations: dict[str, str] = field(default_factory=dict)

    def data(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise DistbuildError(f"cannot read {self.path}: {e.strerror}") from None


def fallback_tag(digest: str) -> str:
    """The referrers tag of ``digest`` (``sha256:<hex>`` → ``sha256-<hex>``)."""
    algo, _, hexd = digest.partition(":")
    return f"{algo}-{hexd}"


def bundle_type(bundle: bytes) -> str:
    """The artifact type of a Sigstore bundle, from the media type it declares.

    ``application/vnd.dev.sigstore.bundle+json;version=0.2`` (older bundles)
    becomes ``application/vnd.dev.sigstore.bundle.v0.2+json``: an artifactType
    carries no parameters.
    """
    try:
        declared = str(json.loads(bundle).get("mediaType", ""))
    except (ValueError, AttributeError):
        declared = ""
    base, _, params = declared.partition(";")
    if base == "application/vnd.dev.sigstore.bundle+json" and params.startswith("version="):
        return f"application/vnd.dev.sigstore.bundle.v{params.removeprefix('version=')}+json"
    if base.startswith("application/vnd.dev.sigstore.bundle.v") and base.endswith("+json"):
        return base
    return BUNDLE_TYPE


def artifact_manifest(
    attachment: Attachment, layer: dict[str, Any], subject: dict[str, Any], created: str
) -> bytes:
    """The artifact manifest for ``attachment``: deterministic for the same inputs."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": attachment.artifact_type,
        "config": EMPTY_DESC,
        "layers": [layer],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {CREATED: created, **attachment.annotations},
    }
    return canonical(manifest)


@dataclass
class AttachResult:
    subject: str
    referrers: list[dict[str, Any]]  # descriptors of the attached artifact manifests
    api: bool  # the registry keeps the list (referrers API) rather than the fallback tag
    fallback_tag: str | None = None


def supports_referrers_api(client: RegistryClient, digest: str) -> bool:
    """Whether the registry answers the referrers API for ``digest`` (404: it does not)."""
    return referrers_from_api(client, digest) is not None


def referrers_from_api(client: RegistryClient, digest: str) -> list[dict[str, Any]] | None:
    """The referrers the registry lists for ``digest``, or None without the API."""
    url = f"{client.base}/v2/{client.repository}/referrers/{digest}"
    # RegistryClient has no public call for this endpoint; its request helpers
    # bring the same auth and retries as every other request.
    resp = client._retrying(
        "asking for referrers",
        lambda: client._send("GET", url, headers={"Accept": INDEX}, ok=(200, 404)),
    )
    content_type = resp.headers.get("Content-Type", "").split(";")[0]
    if resp.status_code != 200 or content_type != INDEX:
        return None
    try:
        return list(resp.json().get("manifests") or [])
    except ValueError:
        raise RegistryError(f"{client.registry}: the referrers API answered no JSON") from None


def referrers_from_tag(client: RegistryClient, digest: str) -> list[dict[str, Any]]:
    """The descriptors the fallback tag ``sha256-<hex>`` lists (empty when it does not exist)."""
    tag = fallback_tag(digest)
    if client.manifest_digest(tag) is None:
        return []
    index = client.get_manifest(tag).json()
    if index.get("mediaType") != INDEX:
        raise RegistryError(
            f"{client.registry}/{client.repository}:{tag} is not an image index",
            hint="something else uses the referrers tag; remove it and publish again",
        )
    return list(index.get("manifests") or [])


def list_referrers(client: RegistryClient, digest: str) -> list[dict[str, Any]]:
    """What refers to ``digest``: through the referrers API, else the fallback tag."""
    found = referrers_from_api(client, digest)
    return found if found is not None else referrers_from_tag(client, digest)


def _upload(client: RegistryClient, data: bytes, digest: str) -> None:
    if not client.blob_exists(digest):
        client.upload_blob(data, digest, len(data))


def attach(
    client: RegistryClient,
    subject: dict[str, Any],
    attachments: list[Attachment],
    created: str,
) -> AttachResult:
    """Attach each file to ``subject`` (a manifest descriptor already in the registry).

    Blobs first, then the artifact manifests (by digest), then — without the
    referrers API — the fallback tag, merged with what it listed before so
    other referrers stay; the same file attached again is not listed twice.
    """
    if client.manifest_digest(subject["digest"]) != subject["digest"]:
        raise RegistryError(
            f"{client.registry}/{client.repository} has no manifest {subject['digest']}",
            hint="push the image first ('distbuild push'), then attach to it",
        )
    _upload(client, EMPTY_DATA, EMPTY_DIGEST)
    descriptors = []
    for a in attachments:
        data = a.data()
        blob = "sha256:" + hashlib.sha256(data).hexdigest()
        layer: dict[str, Any] = {
            "mediaType": a.artifact_type,
            "digest": blob,
            "size": len(data),
            "annotations": {TITLE: a.title},
        }
        _upload(client, data, blob)
        manifest = artifact_manifest(a, layer, subject, created)
        digest = client.put_manifest(
            manifest, MANIFEST, "sha256:" + hashlib.sha256(manifest).hexdigest()
        )
        descriptors.append(
            {
                "mediaType": MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "artifactType": a.artifact_type,
                "annotations": {CREATED: created, **a.annotations},
            }
        )
    if supports_referrers_api(client, subject["digest"]):
        return AttachResult(subject["digest"], descriptors, api=True)
    tag = fallback_tag(subject["digest"])
    listed = referrers_from_tag(client, subject["digest"])
    have = {d["digest"] for d in listed}
    merged = listed + [d for d in descriptors if d["digest"] not in have]
    if len(merged) != len(listed):
        index = canonical({"schemaVersion": 2, "mediaType": INDEX, "manifests": merged})
        client.put_manifest(index, INDEX, tag)
    return AttachResult(subject["digest"], descriptors, api=False, fallback_tag=tag)
