"""Every build carries an SPDX 2.3 SBOM per arch that spdx-tools accepts and
that lists exactly the packages of the lock, with their .deb checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from distbuild.core.arch import ARCHES
from tests.conftest import EPOCH, Builder, read_record

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.mark.parametrize("arch", list(ARCHES))
def test_sbom_per_arch_is_valid_and_matches_the_lock(arch: str, toolbox_all: Path) -> None:
    record = read_record(toolbox_all)
    [sbom] = [a for a in record["artifacts"] if a["kind"] == "sbom" and a["arch"] == arch]
    [lock_art] = [a for a in record["artifacts"] if a["kind"] == "lock" and a["arch"] == arch]
    assert sbom["path"] == f"{arch}/sbom.spdx.json"
    path = toolbox_all / sbom["path"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sbom["sha256"]
    assert len(data) == sbom["size"]

    doc = parse_file(str(path))
    assert validate_full_spdx_document(doc) == []
    assert doc.creation_info.spdx_version == "SPDX-2.3"
    assert int(doc.creation_info.created.timestamp()) == EPOCH  # naive UTC in spdx-tools
    lock = json.loads((toolbox_all / lock_art["path"]).read_text())
    debian = ARCHES[arch].debian
    want = {
        p["name"]: (
            p["version"],
            p["sha256"],
            f"pkg:deb/debian/{p['name']}@{p['version'].replace('+', '%2B')}"
            f"?arch={p['arch']}&distro=debian-12",
        )
        for p in lock["packages"]
    }
    got = {}
    for p in doc.packages:
        if p.name == "toolbox":
            assert p.version == record["version"]
            continue
        [purl] = [r.locator for r in p.external_references if r.reference_type == "purl"]
        [checksum] = p.checksums
        assert checksum.algorithm.name == "SHA256"
        got[p.name] = (p.version, checksum.value, purl)
    assert got == want
    assert any(f"?arch={debian}&" in v[2] for v in got.values())

    raw = json.loads(data)
    licenses = {p["name"]: p["licenseDeclared"] for p in raw["packages"]}
    # DEP-5 copyright files are read; free-form ones are not guessed at.
    assert licenses["ca-certificates"] == "GPL-2.0-or-later AND MPL-2.0"
    assert licenses["openssl"] == "Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)"
    assert licenses["busybox"] == "NOASSERTION"
    rels = {
        (r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
        for r in raw["relationships"]
    }
    ids = {p["name"]: p["SPDXID"] for p in raw["packages"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", ids["toolbox"]) in rels
    assert (ids["openssl"], "DEPENDS_ON", ids["libssl3"]) in rels
    assert (ids["toolbox"], "CONTAINS", ids["libc6"]) in rels


def test_sbom_is_reproducible_on_a_layer_cache_hit(toolbox_all: Path, build_image: Builder) -> None:
    """A rebuild that reuses the cached rootfs layer writes the same SBOM bytes."""
    single = build_image("toolbox", "amd64")
    want = (toolbox_all / "amd64/sbom.spdx.json").read_bytes()
    assert (single / "amd64/sbom.spdx.json").read_bytes() == want
    other = build_image("toolbox", "amd64", version="1.0.1")
    ns = [
        json.loads((d / "amd64/sbom.spdx.json").read_text())["documentNamespace"]
        for d in (single, other)
    ]
    assert ns[0] != ns[1]  # a namespace names one image version
