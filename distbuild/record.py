"""The build record, ``DIR/<image>/<version>/build.json`` (DESIGN.md §3)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distbuild.core import names
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic
from distbuild.core.names import check_name, check_relative_path

RECORD = "build.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HINT = "the build record was changed or damaged; rebuild, or copy the build directory whole"


class RecordError(DistbuildError):
    """A build record (build.json) is unreadable or names something it may not."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint or _HINT)


# The netboot output: what firmware fetches from ``distbuild netboot``'s directory.
NETBOOT_KINDS = frozenset({"netboot-uki", "netboot-kernel", "netboot-initrd", "netboot-script"})


@dataclass(frozen=True)
class Artifact:
    arch: str
    kind: str
    path: str  # relative to build.json
    sha256: str
    size: int
    board: str | None = None  # set on artifacts made for one board (DESIGN.md §3)


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
            "artifacts": [_entry(a) for a in sorted(self.artifacts, key=_order)],
            "oci": self.oci,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / RECORD
        write_atomic(path, self.to_json().encode())
        return path

    def find(self, kind: str, arch: str | None = None, board: str | None = None) -> list[Artifact]:
        """Artifacts of ``kind`` (for ``arch``, and for ``board`` when given)."""
        return [
            a
            for a in self.artifacts
            if a.kind == kind
            and (arch is None or a.arch == arch)
            and (board is None or a.board == board)
        ]

    @property
    def arches(self) -> list[str]:
        from distbuild.core.arch import ARCHES

        have = {a.arch for a in self.artifacts}
        return [a for a in ARCHES if a in have]


def _order(a: Artifact) -> tuple[str, str, str]:
    return (a.arch, a.kind, a.path)


def _entry(a: Artifact) -> dict[str, Any]:
    """An artifact as build.json holds it: ``board`` only where there is one."""
    entry = asdict(a)
    if a.board is None:
        del entry["board"]
    return entry


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
    """Read and check a build record: its names, paths, hashes and sizes are hostile."""
    directory = record_dir(path)
    where = str(directory / RECORD)
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
        raise RecordError(f"{where}: unreadable build record ({e})") from None
    check_record(record, directory, where)
    return record, directory


def check_record(record: BuildRecord, directory: Path, where: str) -> None:
    """Refuse a record whose names break the grammar or whose paths leave ``directory``."""
    check_name(record.image, names.IMAGE, error=RecordError, where=where)
    check_name(record.version, names.VERSION, error=RecordError, where=where)
    if not isinstance(record.source_date_epoch, int) or not 0 <= record.source_date_epoch < 2**32:
        raise RecordError(f"{where}: source_date_epoch {record.source_date_epoch} is out of range")
    for a in record.artifacts:
        check_name(a.arch, names.ARCH, error=RecordError, where=where)
        check_name(a.kind, names.KIND, error=RecordError, where=where)
        check_relative_path(a.path, directory, what="artifact path", error=RecordError, where=where)
        if not isinstance(a.sha256, str) or _SHA256.fullmatch(a.sha256) is None:
            raise RecordError(f"{where}: artifact {a.path!r} has no valid sha256")
        if not isinstance(a.size, int) or a.size < 0:
            raise RecordError(f"{where}: artifact {a.path!r} has an invalid size {a.size!r}")
        if a.board is not None:
            check_name(a.board, names.BOARD, error=RecordError, where=where)
    _check_oci(record.oci, directory, where)


def _check_oci(oci: object, directory: Path, where: str) -> None:
    if not isinstance(oci, dict):
        raise RecordError(f"{where}: 'oci' is not an object")
    if not oci:
        return
    if "layout" in oci:
        check_relative_path(
            oci["layout"], directory, what="OCI layout", error=RecordError, where=where
        )
    if "ref" in oci:
        check_name(oci["ref"], names.VERSION, error=RecordError, where=where)
    index = oci.get("index")
    if index is not None and (not isinstance(index, str) or _DIGEST.fullmatch(index) is None):
        raise RecordError(f"{where}: invalid OCI index digest {index!r}")
    size = oci.get("index_size", 0)
    if not isinstance(size, int) or size < 0:
        raise RecordError(f"{where}: invalid OCI index size {size!r}")
