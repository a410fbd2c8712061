"""The registry side of a release: channel names as tags, SBOMs and signature attached.

After a build lands in a channel, its image index goes to the channel's
registry repository (``<registry>/<image>``) tagged with the version and the
channel's tag (``image:beta``); its per-arch SBOMs and the Sigstore bundle of
the index (when CI signed it) are attached as OCI 1.1 referrers. Promotion
moves the destination channel's tag to the very index the version tag names:
nothing is pushed or rebuilt.

The registry (``HOST[:PORT]/NAMESPACE``) is the caller's: the publish
pipeline (distbuild.channel.pipeline) takes it from ``--registry`` or the
channel's ``registry:`` and calls these functions; nothing here reads the
environment or knows about channels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import ui
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.oci.auth import find_credentials
from distbuild.oci.layout import INDEX
from distbuild.oci.push import push_build
from distbuild.oci.reference import Reference, check_tag
from distbuild.oci.referrers import (
    ARCH,
    SBOM_TYPE,
    Attachment,
    AttachResult,
    attach,
    bundle_type,
)
from distbuild.oci.registry import RegistryClient
from distbuild.record import BuildRecord, load_record
from distbuild.sign.bundles import checked_bundle


@dataclass(frozen=True)
class RegistryRelease:
    reference: str  # registry/repository
    digest: str  # the image index
    tags: tuple[str, ...]
    attached: AttachResult | None = None


def image_reference(registry: str, image: str) -> Reference:
    """``HOST[:PORT]/NAMESPACE`` + image → the image's repository."""
    return Reference.parse(f"{registry.rstrip('/')}/{image}")


def check_registry(registry: str) -> str:
    """A registry to release to, ``HOST[:PORT]/NAMESPACE``, checked; UsageError if not one."""
    text = registry.strip().rstrip("/")
    try:
        image_reference(text, "image")
    except UsageError:
        raise UsageError(
            f"invalid registry {registry[:200]!r}",
            hint="write HOST[:PORT]/NAMESPACE (a port from 1 to 65535), e.g. "
            "localhost:5000/distbuild; images go to NAMESPACE/<image> there",
        ) from None
    return text


def attachments(record: BuildRecord, directory: Path) -> list[Attachment]:
    """The per-arch SBOMs of a build and the signature bundle of its index, if signed."""
    out = [
        Attachment(SBOM_TYPE, directory / a.path, f"sbom-{a.arch}.spdx.json", {ARCH: a.arch})
        for a in sorted(record.find("sbom"), key=lambda a: a.arch)
    ]
    for index in record.find("oci-index"):
        bundle = checked_bundle(directory, index, "the image index")
        if bundle is None:
            continue
        out.append(
            Attachment(bundle_type(bundle.read_bytes()), bundle, f"{index.sha256}.sigstore.json")
        )
    return out


def _client(ref: Reference) -> RegistryClient:
    return RegistryClient(ref.registry, ref.repository, credentials=find_credentials(ref.registry))


def release_build(build: Path, registry: str, channel_tag: str) -> RegistryRelease | None:
    """Push a build's index (tags: version, channel) and attach its SBOMs and signature."""
    record, directory = load_record(build)
    if not record.oci.get("index"):
        return None  # no container image in this build: nothing for a registry
    ref = image_reference(registry, record.image)
    tags = (record.version, check_tag(channel_tag))
    push_build(directory, ref.with_tag(record.version), extra_tags=[channel_tag])
    subject: dict[str, Any] = {
        "mediaType": INDEX,
        "digest": record.oci["index"],
        "size": int(record.oci["index_size"]),
    }
    with _client(ref) as client:
        result = attach(
            client,
            subject,
            attachments(record, directory),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.source_date_epoch)),
        )
    where = (result.fallback_tag and f"fallback tag {result.fallback_tag}") or "the referrers API"
    ui.note(f"attached {len(result.referrers)} artifacts to {ref}@{subject['digest']} ({where})")
    return RegistryRelease(f"{ref.registry}/{ref.repository}", subject["digest"], tags, result)


def promote_tag(registry: str, image: str, version: str, channel_tag: str) -> RegistryRelease:
    """Point ``image:<channel_tag>`` at the index ``image:<version>`` names."""
    ref = image_reference(registry, image)
    check_tag(channel_tag)
    with _client(ref) as client:
        manifest = (
            client.get_manifest(version) if client.manifest_digest(version) is not None else None
        )
        if manifest is None:
            raise DistbuildError(
                f"{ref.registry}/{ref.repository} has no tag {version} to promote",
                hint=f"push the build first: distbuild push BUILD {ref.registry}/{ref.repository}",
            )
        if client.manifest_digest(channel_tag) != manifest.digest:
            client.put_manifest(manifest.data, manifest.media_type, channel_tag)
    ui.note(f"{ref.registry}/{ref.repository}:{channel_tag} is now {manifest.digest}")
    return RegistryRelease(
        f"{ref.registry}/{ref.repository}", manifest.digest, (version, channel_tag)
    )
