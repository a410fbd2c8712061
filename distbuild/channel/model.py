"""Channel definitions (``channels/<name>.yaml``) as frozen models.

A channel fixes how long each kind of TUF metadata stays valid, how many
releases per image it keeps, the OCI registry its images go to and their tag
there, and its rollout waves::

    description: Production releases, promoted from beta.
    keep: 10
    registry: localhost:5000/distbuild  # optional; --registry overrides it
    registry_tag: stable
    expires: {root: 365d, targets: 7d, snapshot: 7d, timestamp: 1d}
    waves:
      - {after: 0h, percent: 5}
      - {after: 1d, percent: 50}
      - {after: 3d, max_seed: 2048}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from distbuild.core import names
from distbuild.core.errors import UsageError
from distbuild.core.releases import MAX_SEED, Wave
from distbuild.model import loader
from distbuild.model.boundary import Boundary
from distbuild.model.loader import Document, KeyPath
from distbuild.model.schema import Field, check
from distbuild.oci.reference import check_tag
from distbuild.oci.release import check_registry

ROLES = ("root", "targets", "snapshot", "timestamp")
DEFAULT_EXPIRY = {"root": "365d", "targets": "7d", "snapshot": "7d", "timestamp": "1d"}
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

WAVE_SPEC = {
    "after": Field(str, required=True, doc="time after publication, e.g. 0h, 6h, 2d"),
    "percent": Field(int, doc="share of the fleet (1-100) in this and earlier waves"),
    "max_seed": Field(int, doc=f"seeds below this (1-{MAX_SEED}) are in this or earlier waves"),
}

CHANNEL_SPEC = {
    "description": Field(str, default=""),
    "keep": Field(
        int, default=10, range=(0, 100_000), doc="releases per image to keep; 0 keeps all"
    ),
    "registry": Field(
        str,
        doc="HOST[:PORT]/NAMESPACE: publish and promote push the image index to "
        "NAMESPACE/<image> there and tag it; default: no registry",
    ),
    "registry_tag": Field(str, doc="the OCI registry tag for this channel; default: its name"),
    "expires": Field(
        {role: Field(str, default=DEFAULT_EXPIRY[role]) for role in ROLES},
        doc="how long each role's metadata stays valid, e.g. 1d, 12h, 2w",
    ),
    "waves": Field(list, default=[], doc="rollout waves, earliest first"),
}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)\s*([smhdw])")


@dataclass(frozen=True)
class Expiry:
    """How long each top-level role's metadata stays valid after signing."""

    root: timedelta
    targets: timedelta
    snapshot: timedelta
    timestamp: timedelta

    def of(self, role: str) -> timedelta:
        """The lifetime of ``role``; delegated (hash-bin) roles live as long as targets."""
        return getattr(self, role) if role in ROLES else self.targets


@dataclass(frozen=True)
class Channel:
    name: str
    path: Path | None
    description: str
    keep: int
    registry_tag: str
    expiry: Expiry
    waves: tuple[Wave, ...]
    registry: str | None = None  # HOST[:PORT]/NAMESPACE, or no registry


def parse_duration(text: str) -> timedelta:
    """``90``, ``30m``, ``12h``, ``1d12h``, ``2w`` → a timedelta (bare numbers are seconds)."""
    text = str(text).strip().lower()
    if text.isdigit():
        return timedelta(seconds=int(text))
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def channel_names(project: Path) -> list[str]:
    """The channels the project defines, sorted."""
    found = (project / "channels").glob("*.yaml")
    return sorted(p.stem for p in found if NAME.fullmatch(p.stem) and not names.problem(p.stem))


def check_name(name: str) -> str:
    """A channel name: a name (distbuild.core.names), and lower-case."""
    if names.problem(name) is not None or not NAME.fullmatch(name):
        raise UsageError(
            f"invalid channel name {name!r}",
            hint="use up to 128 lower-case letters, digits, '.', '_' and '-' (no '..'), "
            "starting with a letter or digit",
        )
    return name


def load_channel(project: Path, name: str) -> Channel:
    """Load and check ``channels/<name>.yaml``."""
    check_name(name)
    path = project / "channels" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(channel_names(project)) or "none"
        raise UsageError(
            f"unknown channel {name!r}",
            hint=f"channels defined in {project / 'channels'}: {known}; "
            f"or add channels/{name}.yaml",
        )
    doc = loader.load(path, {"channel": name}, Boundary.of(project))
    data = check(doc, CHANNEL_SPEC)
    expiry = {}
    for role in ROLES:
        expiry[role] = _duration(doc, ("expires", role), data["expires"][role])
        if expiry[role] <= timedelta(0):
            raise doc.error(("expires", role), "must be longer than zero")
    waves = _waves(doc, data["waves"])
    return Channel(
        name=name,
        path=path,
        description=data["description"],
        keep=data["keep"],
        registry_tag=_tag(doc, data["registry_tag"] or name),
        expiry=Expiry(**expiry),
        waves=waves,
        registry=_registry(doc, data["registry"]),
    )


def _registry(doc: Document, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return check_registry(text)
    except UsageError as e:
        raise doc.error(("registry",), e.message, hint=e.hint) from None


def _tag(doc: Document, tag: str) -> str:
    try:
        return check_tag(tag)
    except UsageError as e:
        raise doc.error(("registry_tag",), e.message, hint=e.hint) from None


def _duration(doc: Document, path: KeyPath, text: str) -> timedelta:
    try:
        return parse_duration(text)
    except (ValueError, OverflowError) as e:
        raise doc.error(path, str(e), hint="write a duration like 30m, 12h, 1d or 2w") from None


def _waves(doc: Document, raw: list[object]) -> tuple[Wave, ...]:
    waves: list[Wave] = []
    for i, item in enumerate(raw):
        path: KeyPath = ("waves", i)
        data = check(doc, WAVE_SPEC, item, path)
        after = int(_duration(doc, (*path, "after"), data["after"]).total_seconds())
        if (data["percent"] is None) == (data["max_seed"] is None):
            raise doc.error(path, "give exactly one of percent or max_seed")
        if data["percent"] is not None:
            if not 1 <= data["percent"] <= 100:
                raise doc.error((*path, "percent"), "must be between 1 and 100")
            bound = data["percent"] * MAX_SEED // 100
        else:
            bound = data["max_seed"]
            if not 1 <= bound <= MAX_SEED:
                raise doc.error((*path, "max_seed"), f"must be between 1 and {MAX_SEED}")
        if waves and (after < waves[-1].after or bound <= waves[-1].max_seed):
            raise doc.error(
                path,
                "waves must open later and reach more of the fleet than the one before",
            )
        waves.append(Wave(after, bound))
    return tuple(waves)
