"""SBOM pieces that are pure functions: DEP-5 → SPDX, purls, the document shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from distbuild.rootfs.lock import Lock, LockedPackage
from distbuild.sbom.licenses import declared, to_spdx
from distbuild.sbom.spdx import DebFacts, document, purl

DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"


@pytest.mark.parametrize(
    ("debian", "spdx"),
    [
        ("GPL-2+", "GPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("Expat", "MIT"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("Artistic or GPL-1+", "Artistic-1.0-Perl OR GPL-1.0-or-later"),
        ("GPL-2+ and BSD-2-clause or MIT", "(GPL-2.0-or-later AND BSD-2-Clause) OR MIT"),
        ("GPL-2+ or MIT, and Zlib", "(GPL-2.0-or-later OR MIT) AND Zlib"),
        ("public-domain", "LicenseRef-public-domain"),
        ("GPL-2+ with OpenSSL exception", "LicenseRef-GPL-2-or-later-with-OpenSSL-exception"),
    ],
)
def test_debian_license_names_map_to_spdx(debian: str, spdx: str) -> None:
    assert to_spdx(debian)[0] == spdx


def test_only_machine_readable_copyright_declares_a_license() -> None:
    assert declared("This package was debianized by someone.\nGPL.\n", "x").expression is None
    assert declared(None, "x").expression is None
    text = (
        DEP5 + "\nFiles: *\nCopyright: 2020 A\nLicense: GPL-2+\n"
        "\nFiles: lib/*\nCopyright: 2020 B\nLicense: MPL-2.0\n"
        "\nFiles: debian/*\nCopyright: 2020 C\nLicense: GPL-2+\n"
        "\nLicense: GPL-2+\n The GPL, version 2 or later.\n"
    )
    assert declared(text, "x").expression == "GPL-2.0-or-later AND MPL-2.0"


def test_unknown_license_carries_its_text() -> None:
    text = (
        DEP5 + "\nFiles: *\nCopyright: none\nLicense: public-domain\n"
        "\nLicense: public-domain\n Do what you want.\n .\n Really.\n"
    )
    d = declared(text, "x")
    assert d.expression == "LicenseRef-public-domain"
    assert d.extracted == {"LicenseRef-public-domain": "Do what you want.\n\nReally."}


def test_purl_escapes_the_version() -> None:
    assert (
        purl("busybox", "1:1.35.0-4+deb12u1", "armhf", "debian-12")
        == "pkg:deb/debian/busybox@1:1.35.0-4%2Bdeb12u1?arch=armhf&distro=debian-12"
    )


def _pkg(
    name: str, version: str, arch: str = "amd64", mirror: str = "http://mirror.test/d"
) -> LockedPackage:
    digest = (name * 64)[:64].encode().hex()[:64]
    return LockedPackage(name, version, arch, f"pool/main/{name}.deb", 100, digest, mirror)


def test_document_is_valid_spdx_with_dependencies_and_refs(tmp_path: Path) -> None:
    lock = Lock(
        "img",
        "amd64",
        "bookworm",
        ("app",),
        (
            _pkg("app", "1.0-1"),
            _pkg("libc6", "2.36-9", mirror="http://127.0.0.1:3142/d"),
            _pkg("debconf", "1.5", "all"),
        ),
    )
    facts = {
        "app": DebFacts(
            "Package: app\nVersion: 1.0-1\nDepends: libc6 (>= 2.34), debconf-2.0 | cdebconf\n"
            "Description: an app\n long text\nHomepage: https://example.org/app\n",
            DEP5 + "\nFiles: *\nCopyright: x\nLicense: GPL-2+ with OpenSSL exception\n",
            None,
        ),
        "libc6": DebFacts("Package: libc6\nSection: libs\nSource: glibc\n", None, None),
        "debconf": DebFacts(
            "Package: debconf\nProvides: debconf-2.0\n",
            DEP5 + "\nFiles: *\nCopyright: x\nLicense: BSD-2-clause\n",
            None,
        ),
    }
    doc = document(image="img", version="1.0", arch="amd64", lock=lock, facts=facts, epoch=86400)
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(doc))
    parsed = parse_file(str(path))
    assert validate_full_spdx_document(parsed) == []
    assert parsed.creation_info.created.isoformat() == "1970-01-02T00:00:00"
    by_name = {p.name: p for p in parsed.packages}
    assert str(by_name["debconf"].license_declared) == "BSD-2-Clause"
    assert by_name["debconf"].download_location == "http://mirror.test/d/pool/main/debconf.deb"
    assert str(by_name["libc6"].download_location) == "NOASSERTION"  # a local cache's address
    assert str(by_name["app"].license_declared).startswith("LicenseRef-GPL-2-or-later-with")
    ids = {p.spdx_id: p.name for p in parsed.packages}
    deps = {
        (ids[r.spdx_element_id], ids[str(r.related_spdx_element_id)])
        for r in parsed.relationships
        if r.relationship_type.name == "DEPENDS_ON"
    }
    # debconf-2.0 is virtual: resolved through debconf's Provides.
    assert deps == {("app", "libc6"), ("app", "debconf")}
    again = document(image="img", version="1.0", arch="amd64", lock=lock, facts=facts, epoch=86400)
    assert again == doc
