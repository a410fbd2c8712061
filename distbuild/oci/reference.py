"""Image references, ``registry/repository[:tag][@digest]``, without a default registry.

The grammar is that of github.com/distribution/reference; unlike Docker,
distbuild never assumes a registry, so a reference must name where it goes.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from distbuild.core.errors import UsageError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?P<registry>{_DOMAIN})/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?\Z",
    re.ASCII,  # \w is [A-Za-z0-9_] as in the OCI grammar, not any script's letters
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_REF_HINT = "write it as HOST[:PORT]/REPOSITORY[:TAG], e.g. localhost:5000/distbuild/toolbox:1.0.0"


@dataclass(frozen=True)
class Reference:
    """Where an image lives: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        m = _REFERENCE.match(text.strip())
        if m is None:
            raise UsageError(f"invalid image reference {text!r}", hint=_explain(text.strip()))
        registry = m["registry"]
        if "." not in registry and ":" not in registry and registry != "localhost":
            raise UsageError(
                f"image reference {text!r} names no registry",
                hint=f"{_REF_HINT} (there is no default registry)",
            )
        _check_port(registry, text)
        if len(m["repository"]) > 255:
            raise UsageError(f"repository name in {text!r} is longer than 255 characters")
        return cls(registry, m["repository"], m["tag"], m["digest"])

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, check_tag(tag), None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _check_port(registry: str, text: str) -> None:
    port = re.search(r":([0-9]+)$", registry)
    if port is None:
        return
    digits = port[1].lstrip("0") or "0"
    if len(digits) > 5 or not 1 <= int(digits) <= 65535:
        raise UsageError(
            f"image reference {text[:120]!r} names port {digits[:12]}",
            hint=f"a port is a number from 1 to 65535; {_REF_HINT}",
        )


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise UsageError(
            f"invalid tag {tag!r}",
            hint="a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    return tag


def _explain(text: str) -> str:
    if "/" not in text:
        return f"{_REF_HINT} (the registry host is missing)"
    repo = text.split("/", 1)[1].split(":")[0].split("@")[0]
    if repo != repo.lower():
        return f"{_REF_HINT} (repository names are lowercase)"
    return _REF_HINT


def is_loopback(registry: str) -> bool:
    """Whether ``host[:port]`` is this machine, where plain HTTP is the norm."""
    host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
