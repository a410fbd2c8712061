"""Debian copyright files (DEP-5) → SPDX license expressions.

Only machine-readable copyright files (``Format: …copyright-format/1.0``) are
read; a free-form file yields no expression (the SBOM says NOASSERTION rather
than guessing). Debian's short names are mapped onto SPDX identifiers; names
SPDX does not know become ``LicenseRef-…`` with the text the file gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from distbuild.rootfs.deb822 import paragraphs

DEP5 = "copyright-format/1.0"

# Debian short name (lower case) → SPDX identifier, for names that are not
# already the SPDX identifier or one of the versioned GNU families below.
_KNOWN = {
    "apache-1.0": "Apache-1.0",
    "apache-1.1": "Apache-1.1",
    "apache-2": "Apache-2.0",
    "apache-2.0": "Apache-2.0",
    "artistic": "Artistic-1.0-Perl",
    "artistic-1.0": "Artistic-1.0",
    "artistic-2.0": "Artistic-2.0",
    "bsd-0-clause": "0BSD",
    "0bsd": "0BSD",
    "bsd-1-clause": "BSD-1-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "bsl-1.0": "BSL-1.0",
    "bzip2-1.0.6": "bzip2-1.0.6",
    "cc0": "CC0-1.0",
    "cc0-1.0": "CC0-1.0",
    "cc-by-3.0": "CC-BY-3.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-3.0": "CC-BY-SA-3.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cddl-1.0": "CDDL-1.0",
    "curl": "curl",
    "epl-1.0": "EPL-1.0",
    "epl-2.0": "EPL-2.0",
    "expat": "MIT",
    "fsfap": "FSFAP",
    "fsful": "FSFUL",
    "fsfullr": "FSFULLR",
    "icu": "ICU",
    "isc": "ISC",
    "libpng": "Libpng",
    "libpng-2.0": "libpng-2.0",
    "lppl-1.3c": "LPPL-1.3c",
    "mit": "MIT",
    "mit-0": "MIT-0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2.0": "MPL-2.0",
    "ntp": "NTP",
    "ofl-1.1": "OFL-1.1",
    "sil-ofl-1.1": "OFL-1.1",
    "openssl": "OpenSSL",
    "psf-2": "PSF-2.0",
    "psf-2.0": "PSF-2.0",
    "python-2.0": "Python-2.0",
    "ruby": "Ruby",
    "sleepycat": "Sleepycat",
    "ssleay": "SSLeay",
    "tcl": "TCL",
    "unicode-dfs-2016": "Unicode-DFS-2016",
    "unlicense": "Unlicense",
    "w3c": "W3C",
    "wtfpl": "WTFPL",
    "x11": "X11",
    "zlib": "Zlib",
    "zpl-2.1": "ZPL-2.1",
}

_GNU = re.compile(r"^(AGPL|GPL|LGPL|GFDL)-(\d+)(?:\.(\d+))?(\+)?$", re.IGNORECASE)
_TOP = re.compile(r",\s*(and|or)\s+", re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Declared:
    """What a package's copyright file declares."""

    expression: str | None  # an SPDX license expression, None when unknown
    extracted: dict[str, str] = field(default_factory=dict)  # LicenseRef-… → its text


def license_ref(name: str) -> str:
    name = name.replace("+", "-or-later")
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "unknown")


def spdx_id(name: str) -> tuple[str, bool]:
    """The SPDX identifier of one Debian short name, and whether it is a LicenseRef."""
    name = name.strip()
    m = _GNU.match(name)
    if m:
        family, major, minor, plus = m.groups()
        return f"{family.upper()}-{major}.{minor or 0}-{'or-later' if plus else 'only'}", False
    known = _KNOWN.get(name.lower())
    if known:
        return known, False
    return license_ref(name), True


def to_spdx(expression: str) -> tuple[str, set[str]]:
    """Translate a DEP-5 ``License:`` expression; return it and the short names made refs.

    DEP-5: ``and`` binds tighter than ``or``; a comma before ``and``/``or``
    separates groups at the lowest precedence.
    """
    refs: set[str] = set()

    def atom(name: str) -> str:
        # "GPL-2+ with OpenSSL exception": SPDX 2.3 has no custom exceptions, so
        # the whole phrase becomes one LicenseRef and keeps its meaning.
        ident, is_ref = spdx_id(name)
        if is_ref:
            refs.add(name.strip())
        return ident

    def group(text: str) -> str:
        alternatives = []
        for alt in _OR.split(text.strip()):
            parts = [atom(p) for p in _AND.split(alt.strip()) if p.strip()]
            alternatives.append(" AND ".join(parts))
        if len(alternatives) == 1:
            return alternatives[0]
        return " OR ".join(f"({a})" if " AND " in a else a for a in alternatives)

    pieces = _TOP.split(" ".join(expression.split()))
    out = group(pieces[0])
    for i in range(1, len(pieces), 2):
        op, rhs = pieces[i].upper(), group(pieces[i + 1])
        wrap = [f"({x})" if " " in x else x for x in (out, rhs)]
        out = f"{wrap[0]} {op} {wrap[1]}"
    return out, refs


def _license_text(body: str) -> str:
    lines = [("" if ln.strip() == "." else ln.rstrip()) for ln in body.splitlines()]
    return "\n".join(lines).strip()


def declared(copyright_text: str | None, package: str) -> Declared:
    """The license a Debian package declares in its copyright file, if machine-readable."""
    if not copyright_text:
        return Declared(None)
    paras = paragraphs(copyright_text)
    if not paras or DEP5 not in paras[0].get("format", ""):
        return Declared(None)
    names: list[str] = []
    texts: dict[str, str] = {}
    for p in paras:
        value = p.get("license")
        if value is None:
            continue
        first, _, body = value.partition("\n")
        first = first.strip()
        if "files" in p:
            if first and first not in names:
                names.append(first)
            if body.strip():
                texts.setdefault(first, _license_text(body))
        elif first and body.strip():
            texts.setdefault(first, _license_text(body))
    if not names:
        return Declared(None)
    expressions: list[str] = []
    extracted: dict[str, str] = {}
    for name in names:
        expr, refs = to_spdx(name)
        if expr not in expressions:
            expressions.append(expr)
        for ref in refs:
            extracted[license_ref(ref)] = texts.get(ref) or (
                f"{ref}: see /usr/share/doc/{package}/copyright in the package"
            )
    if len(expressions) == 1:
        return Declared(expressions[0], extracted)
    joined = " AND ".join(f"({e})" if " " in e else e for e in expressions)
    return Declared(joined, extracted)
