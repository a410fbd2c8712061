"""OCI image layouts (image-spec 1.1): blobs, manifests, one multi-arch index."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core.arch import ARCHES, Platform, arch_for_platform
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import clone_file, write_atomic

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
VERSION = "org.opencontainers.image.version"
TITLE = "org.opencontainers.image.title"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }


def platform_of(desc: dict[str, Any]) -> Platform:
    p = desc.get("platform") or {}
    return Platform(p.get("os", ""), p.get("architecture", ""), p.get("variant"))


@dataclass
class Layout:
    path: Path

    def init(self) -> Layout:
        (self.path / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        marker = self.path / "oci-layout"
        if not marker.exists():
            marker.write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
        return self

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64:
            raise DistbuildError(f"unsupported digest {digest!r}")
        return self.path / "blobs" / algo / hexd

    def put(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        desc = descriptor(media_type, data, **extra)
        path = self.blob_path(desc["digest"])
        if not path.exists():
            write_atomic(path, data)
        return desc

    def put_file(self, src: Path, digest: str) -> None:
        """Add a blob from a file: copied or reflinked, never hard-linked, so damage
        to the source (a cache entry, another build) cannot reach this layout."""
        dest = self.blob_path(digest)
        if dest.exists():
            return
        tmp = dest.with_name(dest.name + ".part")
        tmp.unlink(missing_ok=True)
        clone_file(src, tmp)
        os.replace(tmp, dest)

    def read(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DistbuildError(f"{self.path}: blob {digest} is missing") from None

    def read_json(self, digest: str) -> dict[str, Any]:
        return dict(json.loads(self.read(digest)))

    def top(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.path / "index.json").read_bytes()))
        except (OSError, ValueError) as e:
            raise DistbuildError(
                f"{self.path} is not an OCI image layout ({e})",
                hint="pass the directory of a build (the one with build.json) or an OCI layout",
            ) from None

    def write_top(self, refs: list[dict[str, Any]]) -> None:
        write_atomic(self.path / "index.json", canonical({"schemaVersion": 2, "manifests": refs}))

    def image_index(self, ref: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (descriptor, content) of the layout's image index."""
        manifests = self.top().get("manifests", [])
        for desc in manifests:
            if ref is None or desc.get("annotations", {}).get(REF_NAME) == ref:
                if desc["mediaType"] != INDEX:
                    raise DistbuildError(f"{self.path}: {desc['digest']} is not an image index")
                return desc, self.read_json(desc["digest"])
        raise DistbuildError(f"{self.path}: no image index named {ref!r}")

    def blobs_of(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        return [manifest["config"], *manifest.get("layers", [])]


def image_config(
    platform: Platform, diff_ids: list[str], created: str, cfg: dict[str, Any], history: str
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "created": created,
        **platform.as_oci(),
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": history}],
    }
    return config


def image_manifest(
    config: dict[str, Any], layers: list[dict[str, Any]], annotations: dict[str, str]
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": annotations,
    }


def _arch_order(desc: dict[str, Any]) -> int:
    arch = arch_for_platform(platform_of(desc))
    names = list(ARCHES)
    return names.index(arch.name) if arch else len(names)


def image_index(manifests: list[dict[str, Any]], annotations: dict[str, str]) -> dict[str, Any]:
    """One index over per-arch manifests, in the architecture table's order."""
    ordered = sorted(manifests, key=lambda d: (_arch_order(d), d["digest"]))
    return {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": ordered,
        "annotations": annotations,
    }


def write_index(
    layout: Layout, manifests: list[dict[str, Any]], annotations: dict[str, str], ref: str
) -> dict[str, Any]:
    """Write the image index and name it ``ref`` in index.json; return its descriptor."""
    index = image_index(manifests, annotations)
    desc = layout.put(INDEX, canonical(index))
    desc["annotations"] = {REF_NAME: ref}
    layout.write_top([desc])
    return desc


def copy_image(src: Layout, dst: Layout, manifest_desc: dict[str, Any]) -> None:
    """Copy one manifest and its blobs between layouts."""
    manifest = src.read_json(manifest_desc["digest"])
    for blob in src.blobs_of(manifest):
        dst.put_file(src.blob_path(blob["digest"]), blob["digest"])
    dst.put_file(src.blob_path(manifest_desc["digest"]), manifest_desc["digest"])
