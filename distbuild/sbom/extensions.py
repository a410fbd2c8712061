"""The image's extensions (files fetched by URL, pinned by sha256) in its SPDX document."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from distbuild.model.extensions import Extension


def add_extensions(doc: dict[str, Any], extensions: Sequence[Extension]) -> None:
    """One SPDX package per extension, with its pin, contained in the image ``doc`` describes."""
    image = next(
        r["relatedSpdxElement"]
        for r in doc["relationships"]
        if r["relationshipType"] == "DESCRIBES"
    )
    for ext in extensions:
        ref = "SPDXRef-Extension-" + re.sub(
            r"[^A-Za-z0-9.-]", lambda m: f"-{ord(m[0]):02X}", ext.path.strip("/")
        )
        host = urlsplit(ext.url).hostname or ""
        public = re.fullmatch(r"([a-z0-9-]+\.)+[a-z]{2,5}", host, re.IGNORECASE)
        doc["packages"].append(
            {
                "SPDXID": ref,
                "name": ext.path,
                "downloadLocation": ext.url if public else "NOASSERTION",
                "filesAnalyzed": False,
                "checksums": [{"algorithm": "SHA256", "checksumValue": ext.sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "supplier": "NOASSERTION",
                "primaryPackagePurpose": "FILE",
                "sourceInfo": f"fetched from {ext.url}, pinned by sha256 in the image definition",
            }
        )
        doc["relationships"].append(
            {"spdxElementId": image, "relationshipType": "CONTAINS", "relatedSpdxElement": ref}
        )
