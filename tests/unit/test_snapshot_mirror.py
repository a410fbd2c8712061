"""A snapshot archive as --mirror: apt accepts its frozen (expired) Release files, and
locked packages are fetched from it by pool path, so an old release can be rebuilt
from its shipped locks after the live mirror dropped those versions."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from distbuild.core.errors import LockError
from distbuild.rootfs.apt import AptRoot
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import LockedPackage
from distbuild.rootfs.sources import Source, is_snapshot, sources_for

SNAPSHOT = "/archive/debian/20261130T000000Z"
POOL = "pool/main/h/hello/hello_1.0_amd64.deb"
DEB = b"!<arch>\nnot really a deb, but locked by its sha256\n"


def test_snapshot_urls_are_recognised() -> None:
    assert is_snapshot(f"http://127.0.0.1:1{SNAPSHOT}/")
    assert is_snapshot(f"http://127.0.0.1:1{SNAPSHOT}")
    assert is_snapshot("http://127.0.0.1:1/archive/debian-security/20261130T000000Z")
    assert not is_snapshot("http://127.0.0.1:1/debian")
    assert not is_snapshot("http://127.0.0.1:1/debian/20261130T000000Z/pool")


def apt_options(tmp_path: Path, uri: str) -> list[str]:
    root = AptRoot(tmp_path, "bookworm", "amd64", [Source(uri, "bookworm", ("main",), None)])
    return root._options()


def test_apt_does_not_check_valid_until_of_a_snapshot_only(tmp_path: Path) -> None:
    snapshot = sources_for("bookworm", ("main",), f"http://127.0.0.1:1{SNAPSHOT}/")
    assert [s.uri for s in snapshot] == [f"http://127.0.0.1:1{SNAPSHOT}"]
    root = AptRoot(tmp_path, "bookworm", "amd64", snapshot)
    assert "-oAcquire::Check-Valid-Until=false" in root._options()
    live = apt_options(tmp_path, "http://127.0.0.1:1/debian")
    assert not any("Check-Valid-Until" in o for o in live)


class Archive(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def archive() -> Iterator[str]:
    Archive.files, Archive.asked = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Archive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def locked(source: str) -> LockedPackage:
    digest = hashlib.sha256(DEB).hexdigest()
    return LockedPackage("hello", "1.0", "amd64", POOL, len(DEB), digest, source)


def test_locked_package_gone_from_the_live_mirror_comes_from_the_snapshot(
    tmp_path: Path, archive: str
) -> None:
    Archive.files = {f"{SNAPSHOT}/{POOL}": DEB}  # the live mirror dropped it
    pkg = locked(f"{archive}/debian")
    cache = DebCache(tmp_path)
    cache.ensure([pkg], mirror=f"{archive}{SNAPSHOT}/")
    assert cache.verified(pkg).read_bytes() == DEB
    assert Archive.asked == [f"{SNAPSHOT}/{POOL}"]


def test_package_not_in_the_snapshot_falls_back_to_the_locked_mirror(
    tmp_path: Path, archive: str
) -> None:
    Archive.files = {f"/debian-security/{POOL}": DEB}
    pkg = locked(f"{archive}/debian-security")
    DebCache(tmp_path).ensure([pkg], mirror=f"{archive}{SNAPSHOT}")
    assert Archive.asked == [f"{SNAPSHOT}/{POOL}", f"/debian-security/{POOL}"]


def test_gone_everywhere_says_how_to_rebuild(tmp_path: Path, archive: str) -> None:
    with pytest.raises(LockError) as e:
        DebCache(tmp_path).ensure([locked(f"{archive}/debian")], mirror=f"{archive}{SNAPSHOT}")
    assert "no longer on the mirror" in e.value.message and "snapshot" in (e.value.hint or "")
    assert not list((tmp_path / "debs").iterdir())


def test_the_snapshot_bytes_must_still_match_the_lock(tmp_path: Path, archive: str) -> None:
    Archive.files = {f"{SNAPSHOT}/{POOL}": DEB + b"changed"}
    with pytest.raises(LockError):
        DebCache(tmp_path).ensure([locked(f"{archive}/debian")], mirror=f"{archive}{SNAPSHOT}")
    assert not list((tmp_path / "debs").iterdir())
