"""The build record, ``DIR/<image>/<version>/build.json`` (DESIGN.md §3)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distbuild.errors import DistbuildError
from distbuild.fsutil import write_atomic

RECORD = "build.json"


@dataclass(frozen=True)
class Artifact:
    arch: str
    kind: str
    path: str  # relative to build.json
    sha256: str
    size: int


@dataclass
class BuildRecord:
    image: str
    version: str
    source_date_epoch: int
    artifacts: list[Artifact] = field(default_factory=list)
    oci: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "version": self.version,
            "source_date_epoch": self.source_date_epoch,
            "artifacts": [asdict(a) for a in sorted(self.artifacts, key=_order)],
            "oci": self.oci,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / RECORD
        write_atomic(path, self.to_json().encode())
        return path

    def find(self, kind: str, arch: str | None = None) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind == kind and (arch is None or a.arch == arch)]

    @property
    def arches(self) -> list[str]:
        from distbuild.arch import ARCHES

        have = {a.arch for a in self.artifacts}
        return [a for a in ARCHES if a in have]


def _order(a: Artifact) -> tuple[str, str, str]:
    return (a.arch, a.kind, a.path)


def record_dir(path: Path) -> Path:
    """The directory of a build record given it, its build.json, or an --out dir."""
    path = path.resolve()
    if path.is_file() and path.name == RECORD:
        return path.parent
    if (path / RECORD).is_file():
        return path
    found = sorted(path.glob(f"*/*/{RECORD}")) if path.is_dir() else []
    if len(found) == 1:
        return found[0].parent
    if len(found) > 1:
        raise DistbuildError(
            f"{path} holds {len(found)} builds",
            hint="name one: " + ", ".join(str(f.parent) for f in found[:4]),
        )
    raise DistbuildError(
        f"no build record at {path}",
        hint="pass a build directory (with build.json), as written by 'distbuild image --out'",
    )


def load_record(path: Path) -> tuple[BuildRecord, Path]:
    directory = record_dir(path)
    try:
        data = json.loads((directory / RECORD).read_text())
        record = BuildRecord(
            image=data["image"],
            version=data["version"],
            source_date_epoch=int(data["source_date_epoch"]),
            artifacts=[Artifact(**a) for a in data["artifacts"]],
            oci=data.get("oci", {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DistbuildError(f"{directory / RECORD}: unreadable build record ({e})") from None
    return record, directory
