"""Helpers for the channel tests: synthetic builds, channels, and a real TUF client.

The client is python-tuf's ngclient ``Updater`` with its default urllib3
fetcher, talking HTTP to a server the test starts on 127.0.0.1: the same
independent reader a node uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from tuf.ngclient import Updater

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import Channel, Expiry
from distbuild.channel.serve import Server
from distbuild.core.releases import Wave

ARCHES = ("armv7", "arm64", "amd64")

EXPIRY = Expiry(
    root=timedelta(days=365),
    targets=timedelta(days=7),
    snapshot=timedelta(days=7),
    timestamp=timedelta(days=1),
)


def channel(
    name: str, keep: int = 10, waves: tuple[Wave, ...] = (), **expiry: timedelta
) -> Channel:
    """A channel definition without a YAML file (unit tests)."""
    return Channel(
        name=name,
        path=None,
        description="",
        keep=keep,
        registry_tag=name,
        expiry=replace(EXPIRY, **expiry),
        waves=waves,
    )


def make_keys(path: Path, **counts: int) -> KeyStore:
    """A key directory with one key per role, or ``counts``/thresholds as given.

    The store holds root keys too and is allowed to publish with them (as
    ``--allow-root-keys`` does): the tests create channels, publish and rotate
    with one store. :func:`online_keys` gives the CI layout.
    """
    thresholds = {r[: -len("_threshold")]: n for r, n in counts.items() if r.endswith("_threshold")}
    number = {r: n for r, n in counts.items() if not r.endswith("_threshold")}
    return KeyStore.create(path, number, thresholds, allow_root_keys=True)


def online_keys(full: KeyStore, path: Path) -> KeyStore:
    """Export ``full``'s online keys to ``path`` (as 'keys export-online') and load them."""
    full.export_online(path)
    return KeyStore.load(path)


def make_build(
    out: Path, image: str, version: str, arches: tuple[str, ...] = ARCHES, size: int = 300
) -> Path:
    """A build directory like 'distbuild image' writes, with small per-arch files.

    Each arch gets a lock file and a 'root' payload; an OCI blob and index are
    listed too (they must not become targets).
    """
    directory = out / image / version
    artifacts = []
    for arch in arches:
        for kind, name, body in (
            ("lock", "packages.lock.json", f'{{"arch": "{arch}", "v": "{version}"}}\n'.encode()),
            ("root", "root.img", (f"{image}-{version}-{arch}-".encode() * size)[:size]),
        ):
            path = directory / arch / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            artifacts.append(_artifact(directory, arch, kind, path))
    blob = directory / "oci" / "blobs" / "sha256" / "x"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"{}")
    artifacts.append(_artifact(directory, arches[0], "oci", blob))
    artifacts.append(_artifact(directory, "all", "oci-index", blob))
    record = {"image": image, "version": version, "source_date_epoch": 0, "artifacts": artifacts}
    (directory / "build.json").write_text(json.dumps(record, indent=2))
    return directory


def _artifact(directory: Path, arch: str, kind: str, path: Path) -> dict[str, object]:
    data = path.read_bytes()
    return {
        "arch": arch,
        "kind": kind,
        "path": str(path.relative_to(directory)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def client(server: Server, channel_name: str, root: bytes, workdir: Path) -> Updater:
    """A fresh ngclient Updater for one channel, trusting ``root``."""
    meta, targets = server.channel_urls(channel_name)
    (workdir / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(workdir / "metadata"),
        metadata_base_url=meta,
        target_dir=str(workdir / "targets"),
        target_base_url=targets,
        bootstrap=root,
    )


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` and its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }
