"""The registry side of a release: channel names as tags, SBOMs and signature attached.

After a build lands in a channel, its image index goes to the channel's
registry repository (``<registry>/<image>``) tagged with the version and the
channel's tag (``image:beta``); its per-arch SBOMs and the Sigstore bundle of
the index (when CI signed it) are attached as OCI 1.1 referrers. Promotion
moves the destination channel's tag to the very index the version tag names:
nothing is pushed or rebuilt.

The registry comes from the release event (a ``--registry`` option or the
channel's definition, when those carry one) or ``DISTBUILD_REGISTRY``
(``HOST[:PORT]/NAMESPACE``); without one, a release touches no registry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.channel.hooks import ReleaseEvent, after_release
from distbuild.core import ui
from distbuild.core.errors import DistbuildError
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
from distbuild.sign.bundles import bundle_path, signed_digest

REGISTRY_ENV = "DISTBUILD_REGISTRY"


@dataclass(frozen=True)
class RegistryRelease:
    reference: str  # registry/repository
    digest: str  # the image index
    tags: tuple[str, ...]
    attached: AttachResult | None = None


def image_reference(registry: str, image: str) -> Reference:
    """``HOST[:PORT]/NAMESPACE`` + image → the image's repository."""
    return Reference.parse(f"{registry.rstrip('/')}/{image}")


def attachments(record: BuildRecord, directory: Path) -> list[Attachment]:
    """The per-arch SBOMs of a build and the signature bundle of its index, if signed."""
    out = [
        Attachment(SBOM_TYPE, directory / a.path, f"sbom-{a.arch}.spdx.json", {ARCH: a.arch})
        for a in sorted(record.find("sbom"), key=lambda a: a.arch)
    ]
    for index in record.find("oci-index"):
        bundle = bundle_path(directory, index)
        if bundle is None:
            continue
        said = signed_digest(bundle)
        if said is not None and said != index.sha256:
            raise DistbuildError(
                f"{bundle} signs sha256 {said}, not the image index sha256:{index.sha256}",
                hint="the bundle belongs to another build; sign the index again",
            )
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


def registry_for(event: ReleaseEvent) -> str | None:
    """The registry of a release: the event's, the channel's, else the environment's."""
    for value in (
        getattr(event, "registry", None),
        getattr(event.channel, "registry", None),
        os.environ.get(REGISTRY_ENV),
    ):
        if value:
            return str(value)
    return None


@after_release
def _registry_after_release(event: ReleaseEvent) -> None:
    registry = registry_for(event)
    if registry is None:
        return
    tag = event.channel.registry_tag or event.channel.name
    try:
        if event.action == "publish" and event.record_dir is not None:
            release_build(event.record_dir, registry, tag)
        elif event.action == "promote":
            promote_tag(registry, event.image, event.version, tag)
    except DistbuildError as e:
        raise DistbuildError(
            f"{event.image} {event.version} is in channel {event.channel.name}, but the "
            f"registry {registry} was not updated: {e.message}",
            hint=(e.hint + "; then " if e.hint else "")
            + f"set the tag by hand: distbuild push BUILD {registry}/{event.image} --tag {tag}",
        ) from None
