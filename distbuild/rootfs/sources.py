"""Package sources: the Debian mirror comes from the host's apt sources.

A recipe's ``debian.mirror``, the ``--mirror`` flag or ``DISTBUILD_MIRROR``
override it; no mirror host name is ever written into distbuild itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.rootfs.deb822 import paragraphs

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# A snapshot archive: <base>/archive/<archive>/<YYYYMMDD>T<HHMMSS>Z/ (e.g. the
# Debian snapshot service). Its Release files are frozen, so their Valid-Until
# has passed by design: apt must not hold that against them.
SNAPSHOT_PATH = re.compile(r"/\d{8}T\d{6}Z/?$")


def is_snapshot(uri: str) -> bool:
    """Whether ``uri`` is a snapshot archive (a path ending in a timestamp)."""
    return SNAPSHOT_PATH.search(uri) is not None


@dataclass(frozen=True)
class Source:
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None

    def deb822(self) -> str:
        lines = [
            "Types: deb",
            f"URIs: {self.uri}",
            f"Suites: {self.suite}",
            f"Components: {' '.join(self.components)}",
        ]
        if self.signed_by:  # a key given inline spans lines: each continues the field
            lines.append("Signed-By: " + self.signed_by.replace("\n", "\n "))
        return "\n".join(lines) + "\n"


def host_sources(root: Path = Path("/")) -> list[Source]:
    """Every ``deb`` source the host's apt is configured with."""
    out: list[Source] = []
    etc = root / "etc/apt"
    lists = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            words = line.split()[1:]
            signed_by = None
            if words and words[0].startswith("["):
                opts = []
                while words and not words[0].endswith("]"):
                    opts.append(words.pop(0))
                opts.append(words.pop(0))
                for opt in " ".join(opts).strip("[]").split():
                    if opt.startswith("signed-by="):
                        signed_by = opt.split("=", 1)[1]
            if len(words) >= 3:
                out.append(Source(words[0].rstrip("/"), words[1], tuple(words[2:]), signed_by))
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for st in paragraphs(f.read_text(errors="replace")):
            if "deb" not in st.get("types", "").split() or st.get("enabled", "yes") == "no":
                continue
            for uri in st.get("uris", "").split():
                for suite in st.get("suites", "").split():
                    out.append(
                        Source(
                            uri.rstrip("/"),
                            suite,
                            tuple(st.get("components", "").split()),
                            st.get("signed-by") or None,
                        )
                    )
    return out


def sources_for(suite: str, components: tuple[str, ...], mirror: str | None) -> list[Source]:
    """The sources for one Debian suite: ``suite``, ``suite-updates``, ``suite-security``."""
    mirror = mirror or os.environ.get("DISTBUILD_MIRROR")
    keyring = DEFAULT_KEYRING if Path(DEFAULT_KEYRING).exists() else None
    if mirror:
        return [Source(mirror.rstrip("/"), suite, components, keyring)]
    family = {suite, f"{suite}-updates", f"{suite}-security"}
    found = [
        Source(
            s.uri,
            s.suite,
            # The recipe's components, from the host's Debian mirror, even where the
            # host itself enables only main (the Pi boards' non-free-firmware).
            components,
            s.signed_by or keyring,
        )
        for s in host_sources()
        if s.suite in family and "main" in s.components
    ]
    if not any(s.suite == suite for s in found):
        raise DistbuildError(
            f"the host's apt sources have no Debian mirror for suite {suite!r}",
            hint="add one to /etc/apt/sources.list.d, or pass --mirror URL / set DISTBUILD_MIRROR",
        )
    return sorted(set(found), key=lambda s: (s.suite != suite, s.suite, s.uri))
