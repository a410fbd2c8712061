"""Referrer artifact manifests (pure parts; the registry side is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

from distbuild.oci.referrers import (
    EMPTY_DIGEST,
    Attachment,
    artifact_manifest,
    bundle_type,
    fallback_tag,
)

INDEX = {
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "digest": "sha256:" + "ab" * 32,
    "size": 123,
    "annotations": {"x": "y"},
}


def test_fallback_tag_replaces_the_colon() -> None:
    assert fallback_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32


def test_bundle_artifact_type_has_no_parameters() -> None:
    v02 = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2"})
    assert bundle_type(v02.encode()) == "application/vnd.dev.sigstore.bundle.v0.2+json"
    v03 = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"})
    assert bundle_type(v03.encode()) == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle_type(b"not json") == "application/vnd.dev.sigstore.bundle.v0.3+json"


def test_artifact_manifest_names_the_index_as_subject(tmp_path: Path) -> None:
    a = Attachment("application/spdx+json", tmp_path / "s.json", "sbom-amd64.spdx.json",
                   {"dev.distbuild.arch": "amd64"})  # fmt: skip
    layer = {"mediaType": a.artifact_type, "digest": "sha256:" + "cd" * 32, "size": 9}
    raw = artifact_manifest(a, layer, INDEX, "2025-11-27T00:00:00Z")
    m = json.loads(raw)
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert m["artifactType"] == "application/spdx+json"
    assert m["config"]["digest"] == EMPTY_DIGEST and m["config"]["size"] == 2
    assert m["subject"] == {k: INDEX[k] for k in ("mediaType", "digest", "size")}
    assert m["layers"] == [layer]
    assert m["annotations"]["dev.distbuild.arch"] == "amd64"
    # Same inputs, same bytes: re-attaching is idempotent in the registry.
    assert artifact_manifest(a, layer, INDEX, "2025-11-27T00:00:00Z") == raw
