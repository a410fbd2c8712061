"""SPDX 2.3 JSON documents of an image's Debian packages, per arch.

Source of truth: the locked .debs themselves, read from the package cache
after their sha256 is checked against the lock. Their control files are the
very paragraphs that rootfs extraction writes into ``var/lib/dpkg/status``,
so this sees what the image's package database says, and it works when the
rootfs tree was not rebuilt (a layer-cache hit). Licenses come from the
packages' ``usr/share/doc/<name>/copyright``, which only the .debs carry.

Per-.deb facts are cached by the .deb's sha256 (immutable), so an SBOM costs
one pass over each package once, and a JSON write after that.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import distbuild
from distbuild.core.fsutil import write_atomic
from distbuild.model.extensions import Extension
from distbuild.rootfs import deb
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import Lock, LockedPackage
from distbuild.sbom.extensions import add_extensions
from distbuild.sbom.licenses import Declared, declared

NOASSERTION = "NOASSERTION"
FACTS_VERSION = 1

# Debian codename → release number, for the purl's distro qualifier.
_RELEASES = {"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14"}


@dataclass(frozen=True)
class DebFacts:
    """What the SBOM needs from one .deb."""

    control: str  # the control file, as written into var/lib/dpkg/status
    copyright: str | None  # usr/share/doc/<name>/copyright, when the package has one
    doc_link: str | None  # the doc directory this package's doc dir points to


def read_facts(path: Path, name: str) -> DebFacts:
    """Read the control file and the copyright file of one .deb in one pass."""
    ctl = deb.control(path).get("control", b"").decode(errors="replace")
    doc = f"usr/share/doc/{name}"
    copyright_text: str | None = None
    link: str | None = None
    with deb.open_tar(path, "data") as tar:
        for ti in tar:
            member = ti.name.removeprefix("./").rstrip("/")
            if member == doc and ti.issym():
                link = posixpath.basename(ti.linkname.rstrip("/"))
            elif member == f"{doc}/copyright":
                if ti.isreg():
                    f = tar.extractfile(ti)
                    if f is not None:
                        copyright_text = f.read().decode(errors="replace")
                elif ti.issym():  # e.g. ../<other>/copyright
                    link = posixpath.basename(posixpath.dirname(ti.linkname)) or None
                break
    return DebFacts(ctl, copyright_text, link)


class FactsCache:
    """Per-.deb facts, stored by the .deb's sha256 next to the package cache."""

    def __init__(self, debs: DebCache) -> None:
        self.debs = debs
        self.dir = debs.dir.parent / "sbom"

    def get(self, pkg: LockedPackage) -> DebFacts:
        path = self.dir / f"{pkg.sha256}.json"
        try:
            data = json.loads(path.read_text())
            if data.pop("facts_version", None) == FACTS_VERSION:
                return DebFacts(**data)
        except (OSError, ValueError, TypeError):
            pass
        facts = read_facts(self.debs.verified(pkg), pkg.name)
        blob = {"facts_version": FACTS_VERSION, **asdict(facts)}
        write_atomic(path, json.dumps(blob, sort_keys=True).encode())
        return facts


def purl(name: str, version: str, arch: str, distro: str) -> str:
    """``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=<distro>`` (purl escaping)."""
    v = quote(version, safe="").replace("%3A", ":")
    return f"pkg:deb/debian/{quote(name, safe='')}@{v}?arch={arch}&distro={distro}"


def download_location(pkg: LockedPackage) -> str:
    """The .deb's URL on the mirror it was locked from, when others can resolve it.

    A mirror reached by address or single-label name (a local cache, a proxy)
    means nothing to a reader of the SBOM elsewhere, and SPDX validators reject
    such URLs, so it becomes NOASSERTION.
    """
    url = f"{pkg.source.rstrip('/')}/{pkg.filename}"
    host = urlsplit(url).hostname or ""
    if re.fullmatch(r"([a-z0-9-]+\.)+[a-z]{2,5}", host, re.IGNORECASE):
        return url
    return NOASSERTION


def distro(suite: str) -> str:
    return f"debian-{_RELEASES.get(suite, suite)}"


def _spdx_ref(kind: str, *parts: str) -> str:
    # Debian names are lower case; upper-case hex escapes cannot collide with them.
    text = "-".join(parts)
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]", lambda m: f"-{ord(m[0]):02X}", text)


def _names(field_value: str) -> list[list[str]]:
    """``a (>= 1) | b, c:any`` → [["a", "b"], ["c"]]."""
    out = []
    for clause in field_value.split(","):
        alts = [a.strip().split()[0].split(":")[0] for a in clause.split("|") if a.strip()]
        if alts:
            out.append(alts)
    return out


def namespace_digest(image: str, version: str, arch: str, lock: Lock) -> str:
    h = hashlib.sha256(f"{image}\0{version}\0{arch}\0{lock.digest()}".encode())
    return h.hexdigest()


def document(
    *,
    image: str,
    version: str,
    arch: str,
    lock: Lock,
    facts: dict[str, DebFacts],
    epoch: int,
) -> dict[str, Any]:
    """The SPDX 2.3 document (as JSON data) for one image and arch."""
    dist = distro(lock.suite)
    image_ref = _spdx_ref("Image", image, arch)
    pkgs = sorted(lock.packages, key=lambda p: p.name)
    refs = {p.name: _spdx_ref("Package-deb", p.name, p.arch) for p in pkgs}
    fields = {p.name: deb.parse_fields(facts[p.name].control) for p in pkgs}
    provides: dict[str, str] = {}
    for p in pkgs:
        for alts in _names(fields[p.name].get("Provides", "")):
            provides.setdefault(alts[0], p.name)
    summary = (
        f"distbuild image {image} {version} for {arch} "
        f"({len(pkgs)} Debian packages, {lock.suite}, {lock.arch})"
    )
    packages = [_image_package(image_ref, image, version, summary)]
    relationships = [_relationship("SPDXRef-DOCUMENT", "DESCRIBES", image_ref)]
    extracted: dict[str, str] = {}
    for p in pkgs:
        decl = _declared(p, facts)
        for ref, body in decl.extracted.items():
            extracted.setdefault(ref, body)
        packages.append(_deb_package(p, fields[p.name], refs[p.name], decl, dist))
        relationships.append(_relationship(image_ref, "CONTAINS", refs[p.name]))
        relationships.extend(
            _relationship(refs[p.name], "DEPENDS_ON", refs[d])
            for d in _depends(p.name, fields[p.name], refs, provides)
        )
    doc = _document_head(image, version, arch, lock, epoch)
    doc["packages"] = packages
    doc["relationships"] = relationships
    if extracted:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": ref.removeprefix("LicenseRef-"), "extractedText": text}
            for ref, text in sorted(extracted.items())
        ]
    return doc


def _document_head(image: str, version: str, arch: str, lock: Lock, epoch: int) -> dict[str, Any]:
    """The document's own fields: its name, namespace and creation info."""
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image}-{version}-{arch}",
        "documentNamespace": "https://spdx.org/spdxdocs/distbuild/"
        f"{quote(image)}/{quote(version)}/{arch}-{namespace_digest(image, version, arch, lock)}",
        "creationInfo": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
            "creators": [f"Tool: distbuild-{distbuild.__version__}"],
            "comment": "Packages and checksums from the image's lock; licenses as declared "
            "in each package's machine-readable debian/copyright (NOASSERTION otherwise).",
        },
    }


def _relationship(element: str, kind: str, related: str) -> dict[str, str]:
    return {"spdxElementId": element, "relationshipType": kind, "relatedSpdxElement": related}


def _image_package(ref: str, image: str, version: str, summary: str) -> dict[str, Any]:
    """The image itself, the package the document describes."""
    return {
        "SPDXID": ref,
        "name": image,
        "versionInfo": version,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "supplier": NOASSERTION,
        "summary": summary,
    }


def _declared(p: LockedPackage, facts: dict[str, DebFacts]) -> Declared:
    """The license ``p`` declares: in its own copyright file, or the one its doc dir links to."""
    f = facts[p.name]
    text = f.copyright
    if text is None and f.doc_link and f.doc_link in facts:
        text = facts[f.doc_link].copyright  # e.g. libgcc-s1 → gcc-12-base
    owner = p.name if f.copyright is not None else (f.doc_link or p.name)
    return declared(text, owner)


def _deb_package(
    p: LockedPackage, ctl: dict[str, str], ref: str, decl: Declared, dist: str
) -> dict[str, Any]:
    """The SPDX package of one locked .deb."""
    entry: dict[str, Any] = {
        "SPDXID": ref,
        "name": p.name,
        "versionInfo": p.version,
        "supplier": "Organization: Debian",
        "downloadLocation": download_location(p),
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": decl.expression or NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "LIBRARY" if _is_library(p.name, ctl) else "APPLICATION",
        "externalRefs": [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(p.name, p.version, p.arch, dist),
            }
        ],
    }
    if ctl.get("Description"):
        entry["summary"] = ctl["Description"].splitlines()[0].strip()
    homepage = ctl.get("Homepage", "")
    if re.fullmatch(r"https?://\S+", homepage):
        entry["homepage"] = homepage
    source = ctl.get("Source", "").split()
    if source:
        src_version = source[1].strip("()") if len(source) > 1 else p.version
        entry["sourceInfo"] = f"built from Debian source package {source[0]} {src_version}"
    return entry


def _depends(
    name: str, ctl: dict[str, str], refs: dict[str, str], provides: dict[str, str]
) -> list[str]:
    """The image's packages ``name`` depends on: the first alternative the image holds,
    by name or by what a package provides."""
    deps: set[str] = set()
    for key in ("Pre-Depends", "Depends"):
        for alts in _names(ctl.get(key, "")):
            hit = next(
                (a if a in refs else provides[a] for a in alts if a in refs or a in provides),
                None,
            )
            if hit and hit != name:
                deps.add(hit)
    return sorted(deps)


def _is_library(name: str, ctl: dict[str, str]) -> bool:
    return name.startswith("lib") or ctl.get("Section", "").endswith("libs")


def write_sbom(
    path: Path,
    *,
    image: str,
    version: str,
    arch: str,
    lock: Lock,
    debs: DebCache,
    epoch: int,
    extensions: Sequence[Extension] = (),
) -> Path:
    """Write ``path`` (``<arch>/sbom.spdx.json``) for one image and arch, atomically."""
    cache = FactsCache(debs)
    facts = {p.name: cache.get(p) for p in lock.packages}
    doc = document(image=image, version=version, arch=arch, lock=lock, facts=facts, epoch=epoch)
    add_extensions(doc, extensions)
    write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path
