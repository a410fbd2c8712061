"""``extensions:`` of an image definition: files Debian lacks, fetched at build time.

Each entry names a path in the root, its mode, and where to fetch its bytes
for each arch, pinned by sha256::

    extensions:
      /usr/local/bin/kubelet:
        mode: "0755"
        fetch:
          url: https://dl.k8s.io/release/v1.31.0/bin/linux/{{ arch.debian | replace('armhf', 'arm') }}/kubelet
          sha256: {armv7: …, arm64: …, amd64: …}

The definition is rendered per arch before it is read, so a URL may use the
arch table (``arch.name``: armv7/arm64/amd64, ``arch.debian``: armhf/arm64/amd64,
``arch.uname``: armv7l/aarch64/x86_64) and Jinja filters; ``url`` may also be
a mapping keyed by arch name. The arch being built must have a pin: a file nobody pinned never lands
(``<arch>: null`` in ``sha256`` leaves the file out of that arch on purpose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from distbuild.core.arch import ARCHES, Arch
from distbuild.model.loader import Document, KeyPath
from distbuild.model.schema import Field, check, octal_mode, refuse_numeric_mode

MAX_URL = 2048
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SPEC = {
    "mode": Field(str, default="0644"),
    "fetch": Field(
        {
            "url": Field(object, required=True, doc="http(s) URL, or a mapping arch: URL"),
            "sha256": Field("any-map", required=True, doc="a mapping arch: sha256 of the file"),
        },
        required=True,
        doc="fetch: {url: …, sha256: {armv7: …, arm64: …, amd64: …}}",
    ),
}


@dataclass(frozen=True)
class Extension:
    """One fetched file, resolved for one arch."""

    path: str
    mode: int
    url: str
    sha256: str
    # file:line and key path of the entry, for errors found while fetching or installing.
    where: str
    key: str


def parse_extensions(doc: Document, value: dict[str, Any], arch: Arch) -> tuple[Extension, ...]:
    """The ``extensions:`` mapping (path: {mode, fetch}) checked, for ``arch``.

    An entry whose pin for ``arch`` is written as ``null`` is left out of that arch.
    """
    entries = [_entry(doc, str(path), spec, arch) for path, spec in value.items()]
    return tuple(sorted((e for e in entries if e is not None), key=lambda e: e.path))


def _entry(doc: Document, path: str, spec: Any, arch: Arch) -> Extension | None:
    at: KeyPath = ("extensions", path)
    _check_path(doc, at, path)
    refuse_numeric_mode(doc, at, spec)
    entry = check(doc, _SPEC, spec, at)
    mode = octal_mode(doc, at, entry["mode"], "0755")
    fetch = entry["fetch"]
    if arch.name in fetch["sha256"] and fetch["sha256"][arch.name] is None:
        return None  # not for this arch, on purpose
    url = _for_arch(doc, (*at, "fetch", "url"), fetch["url"], arch, "URL")
    _check_url(doc, (*at, "fetch", "url"), url)
    digest = _for_arch(doc, (*at, "fetch", "sha256"), fetch["sha256"], arch, "sha256")
    if not _SHA256.match(digest):
        raise doc.error(
            (*at, "fetch", "sha256", arch.name),
            f"{digest[:80]!r} is not a sha256 (64 hex digits)",
            hint="write the output of 'sha256sum FILE' for that arch's file, quoted",
        )
    where = doc.where(at)
    return Extension(path, mode, url, digest.lower(), where, f"extensions.{path}")


def _for_arch(doc: Document, at: KeyPath, value: Any, arch: Arch, what: str) -> str:
    """``value`` itself, or its entry for ``arch`` if it is a mapping keyed by arch name."""
    if isinstance(value, dict):
        for key in value:
            if key not in ARCHES:
                raise doc.error(
                    (*at, key), f"unknown arch {key!r}", hint=f"arches: {', '.join(ARCHES)}"
                )
        if value.get(arch.name) is None:
            raise doc.error(
                at,
                f"no {what} for {arch.name}, the arch being built",
                hint=f"add '{arch.name}: …' here (what the file is for {arch.name}), "
                f"or '{arch.name}: null' in sha256 to leave the file out of {arch.name}",
            )
        at, value = (*at, arch.name), value[arch.name]
    if not isinstance(value, str):
        raise doc.error(
            at,
            f"the {what} must be a string, not {type(value).__name__}",
            hint="quote it: YAML reads some digit strings as numbers",
        )
    return value


def _check_url(doc: Document, at: KeyPath, url: str) -> None:
    hint = "an extension is fetched over http or https: write 'https://host/path'"
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise doc.error(at, f"{url[:80]!r} is not a usable URL", hint=hint)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as e:
        raise doc.error(at, f"{url[:80]!r} is not a usable URL: {e}", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise doc.error(at, f"{url[:80]!r} is not an http(s) URL", hint=hint)
    if parts.username is not None or parts.password is not None:
        raise doc.error(
            at,
            "the URL carries credentials",
            hint="the URL is written into the build record and SBOM: pin a public URL",
        )


def _check_path(doc: Document, at: KeyPath, path: str) -> None:
    """An absolute path of a sane length inside the root (RootDir confines it again)."""
    hint = "extensions name files inside the image, e.g. /usr/local/bin/kubelet"
    if not path.startswith("/") or "\0" in path or len(path) > 4096 or path.endswith("/"):
        raise doc.error(at, f"{path[:60]!r} is not an absolute file path", hint=hint)
    depth = 0
    for part in path.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise doc.error(at, f"{path[:60]!r} leaves the image's root ('..' above /)", hint=hint)
