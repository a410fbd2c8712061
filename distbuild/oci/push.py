"""Pushing a build's OCI image index to a registry.

Order is what keeps a registry consistent when a push stops halfway: every
blob before the manifest that names it, every manifest before the index that
names it, and the tags last. A registry therefore never holds a manifest that
points at something missing, and a tag appears only once everything under it
is there. What the registry already has is skipped, so pushing again resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distbuild.core import ui
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.oci.auth import find_credentials
from distbuild.oci.layout import INDEX, MANIFEST, Layout
from distbuild.oci.reference import Reference
from distbuild.oci.registry import (
    DEFAULT_CHUNK,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    RegistryClient,
)
from distbuild.record import load_record

_INDEXES = (INDEX, DOCKER_LIST)
_MANIFESTS = (MANIFEST, DOCKER_MANIFEST)


@dataclass
class PushResult:
    reference: str
    digest: str
    tags: list[str]
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    manifests_uploaded: int = 0
    manifests_skipped: int = 0
    tags_updated: list[str] = field(default_factory=list)
    bytes_sent: int = 0  # blob bytes on the wire, uploads repeated after failures included
    retries: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pusher:
    client: RegistryClient
    layout: Layout
    result: PushResult
    done: set[str] = field(default_factory=set)

    def blob(self, desc: dict[str, Any]) -> None:
        digest, size = desc["digest"], int(desc["size"])
        if digest in self.done:
            return
        path = self.layout.blob_path(digest)
        if not path.is_file():
            raise DistbuildError(
                f"{self.layout.path}: blob {digest} is missing",
                hint="the OCI layout is incomplete; build the image again",
            )
        if self.client.blob_exists(digest):
            self.result.blobs_skipped += 1
            self.result.bytes_skipped += size
        else:
            self.client.upload_blob(path, digest, size)
            self.result.blobs_uploaded += 1
            self.result.bytes_uploaded += size
        self.done.add(digest)

    def manifest(self, desc: dict[str, Any]) -> None:
        """Push what a manifest or index names, then the manifest itself, by digest."""
        digest = desc["digest"]
        if digest in self.done:
            return
        data = self.layout.read(digest)
        content = self.layout.read_json(digest)
        media_type = content.get("mediaType") or desc["mediaType"]
        if media_type in _INDEXES:
            for child in content.get("manifests", []):
                self._child(child)
        elif media_type in _MANIFESTS:
            for blob in [content["config"], *content.get("layers", [])]:
                self.blob(blob)
        else:
            raise DistbuildError(f"{self.layout.path}: {digest} has unknown type {media_type!r}")
        if self.client.manifest_digest(digest) == digest:
            self.result.manifests_skipped += 1
        else:
            self.client.put_manifest(data, media_type, digest)
            self.result.manifests_uploaded += 1
        self.done.add(digest)

    def _child(self, desc: dict[str, Any]) -> None:
        if desc["mediaType"] in (*_INDEXES, *_MANIFESTS):
            self.manifest(desc)
        else:
            self.blob(desc)

    def tag(self, tag: str, desc: dict[str, Any]) -> None:
        digest = desc["digest"]
        if self.client.manifest_digest(tag) == digest:
            return
        data = self.layout.read(digest)
        media_type = self.layout.read_json(digest).get("mediaType") or desc["mediaType"]
        self.client.put_manifest(data, media_type, tag)
        self.result.tags_updated.append(tag)


def push_layout(
    client: RegistryClient, layout: Layout, index: dict[str, Any], tags: list[str]
) -> PushResult:
    """Push the index ``index`` (a descriptor in ``layout``) and tag it with ``tags``."""
    start = time.monotonic()
    first = Reference(client.registry, client.repository, tags[0] if tags else None)
    result = PushResult(str(first), index["digest"], list(tags))
    pusher = _Pusher(client, layout, result)
    pusher.manifest(index)
    for tag in tags:
        pusher.tag(tag, index)
    result.bytes_sent = client.bytes_sent
    result.retries = client.retried
    result.seconds = round(time.monotonic() - start, 3)
    return result


def push_build(
    build: Path,
    ref: Reference,
    *,
    extra_tags: list[str] | None = None,
    plain_http: bool | None = None,
    retries: int = 4,
    chunk_size: int | None = None,
) -> PushResult:
    """Push a build's image index to ``ref``; with no tag in ``ref`` the build's version."""
    record, directory = load_record(build)
    if not record.oci.get("index"):
        raise DistbuildError(
            f"build {directory} has no OCI image",
            hint="add 'oci' to the image's outputs and build it again",
        )
    layout = Layout(directory / record.oci.get("layout", "oci"))
    digest = record.oci["index"]
    if ref.digest and ref.digest != digest:
        raise UsageError(
            f"{ref} names digest {ref.digest}, but the build's index is {digest}",
            hint="leave the digest out of the reference",
        )
    tags = [ref.tag or record.version]
    tags += [t for t in (ref.with_tag(t).tag for t in extra_tags or []) if t and t not in tags]
    index = {"mediaType": INDEX, "digest": digest, "size": int(record.oci.get("index_size", 0))}
    with RegistryClient(
        ref.registry,
        ref.repository,
        credentials=find_credentials(ref.registry),
        plain_http=plain_http,
        retries=retries,
        chunk_size=chunk_size or DEFAULT_CHUNK,
    ) as client:
        ui.note(f"pushing {record.image} {record.version} to {ref.registry}/{ref.repository}")
        return push_layout(client, layout, index, tags)
