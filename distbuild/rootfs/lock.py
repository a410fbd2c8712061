"""Lock files: the exact .deb files an image is built from, per arch.

``images/<image>.<arch>.lock.json`` records, for every package in the
dependency closure, its name, version, arch, pool path, size and sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from distbuild.core.errors import LockError
from distbuild.core.fsutil import write_atomic

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    arch: str
    filename: str  # pool path relative to the mirror root
    size: int
    sha256: str
    source: str  # the mirror URI the package was resolved from


@dataclass(frozen=True)
class Lock:
    image: str
    arch: str
    suite: str
    requested: tuple[str, ...]
    packages: tuple[LockedPackage, ...]

    def to_json(self) -> str:
        data = {
            "lock_version": LOCK_VERSION,
            "image": self.image,
            "arch": self.arch,
            "suite": self.suite,
            "requested": sorted(self.requested),
            "packages": [asdict(p) for p in sorted(self.packages, key=lambda p: p.name)],
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def lock_path(project: Path, image: str, arch: str) -> Path:
    return project / "images" / f"{image}.{arch}.lock.json"


def read_lock(path: Path) -> Lock:
    try:
        data = json.loads(path.read_text())
        if data.get("lock_version") != LOCK_VERSION:
            raise ValueError(f"unsupported lock_version {data.get('lock_version')!r}")
        return Lock(
            image=data["image"],
            arch=data["arch"],
            suite=data["suite"],
            requested=tuple(data["requested"]),
            packages=tuple(LockedPackage(**p) for p in data["packages"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LockError(
            f"{path}: unreadable lock file ({e})",
            hint="delete it and run 'distbuild lock' to resolve the packages again",
        ) from None


def write_lock(path: Path, lock: Lock) -> None:
    write_atomic(path, lock.to_json().encode())
