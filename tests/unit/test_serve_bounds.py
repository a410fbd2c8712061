"""``serve`` stays inside the repository and bounds its threads, idle clients and headers.

Real sockets on 127.0.0.1 against the real server of ``distbuild serve``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from distbuild.channel.serve import serving

SECRET = b"the host's secret"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    repo = tmp_path / "repo"
    (repo / "stable/targets").mkdir(parents=True)
    (repo / "stable/targets/f.img").write_bytes(b"payload")
    return repo


def _get(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def test_symlinks_out_of_the_repo_are_not_followed(repo: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside/secret", repo / "stable/targets/secret")
    os.symlink(tmp_path / "outside", repo / "stable/out")
    os.symlink("../../../outside/secret", repo / "stable/targets/relative")
    os.symlink("f.img", repo / "stable/targets/alias.img")  # inside: fine
    with serving(repo) as s:
        for path in ("stable/targets/secret", "stable/out/secret", "stable/targets/relative"):
            r = _get(f"{s.url}/{path}")
            assert r.status_code == 404, path
            assert SECRET not in r.content
            ranged = requests.get(f"{s.url}/{path}", headers={"Range": "bytes=0-"}, timeout=10)
            assert ranged.status_code == 404 and SECRET not in ranged.content
        assert _get(f"{s.url}/stable/targets/alias.img").content == b"payload"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        "stable/.hidden",
        "stable/targets/.f.img.tmp",
        "stable/metadata.lock",
        "stable/targets/%2egit/config",
        "stable/targets/link-to-dotfile",
    ],
)
def test_dotfiles_and_lock_files_are_refused(repo: Path, path: str) -> None:
    (repo / ".git").mkdir()
    (repo / ".git/config").write_bytes(SECRET)
    (repo / "stable/.hidden").write_bytes(SECRET)
    (repo / "stable/targets/.f.img.tmp").write_bytes(SECRET)
    (repo / "stable/metadata.lock").write_bytes(SECRET)
    (repo / "stable/targets/.git").mkdir()
    (repo / "stable/targets/.git/config").write_bytes(SECRET)
    os.symlink("../.hidden", repo / "stable/targets/link-to-dotfile")
    with serving(repo) as s:
        r = _get(f"{s.url}/{path}")
        head = requests.head(f"{s.url}/{path}", timeout=10)
    assert r.status_code == 404 and head.status_code == 404
    assert SECRET not in r.content


def test_idle_connections_neither_hold_threads_nor_block_requests(repo: Path) -> None:
    before = threading.active_count()
    with serving(repo, workers=4, idle_timeout=1.0) as s:
        host, port = s.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(50)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            assert _get(f"{s.url}/stable/targets/f.img").content == b"payload"
            assert time.monotonic() - started < 0.5
            # the serve loop, the waiting room and at most 4 workers
            assert threading.active_count() - before <= 2 + 4
            # The silent ones are dropped after the idle timeout.
            deadline = time.monotonic() + 5
            for sock in idle:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1) == b""
            assert time.monotonic() - started < 3
        finally:
            for sock in idle:
                sock.close()


def test_half_sent_requests_hold_no_worker(repo: Path) -> None:
    before = threading.active_count()
    with serving(repo, workers=4, idle_timeout=5.0, header_timeout=1.0) as s:
        host, port = s.url.removeprefix("http://").split(":")
        # 30 clients that start a request and never finish it (slowloris): the
        # waiting room holds them, not the 4 workers, and drops them after 1 s.
        slow = []
        for _ in range(30):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /stable/targets/f.img HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        try:
            time.sleep(0.3)
            started = time.monotonic()
            assert _get(f"{s.url}/stable/targets/f.img").content == b"payload"
            assert time.monotonic() - started < 0.5
            assert threading.active_count() - before <= 2 + 4
            for sock in slow:
                sock.settimeout(max(0.1, started + 3 - time.monotonic()))
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(1) == b""
            assert time.monotonic() - started < 3
        finally:
            for sock in slow:
                sock.close()


def test_trickled_request_headers_are_dropped(repo: Path) -> None:
    with serving(repo, header_timeout=1.5) as s:
        host, port = s.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        started = time.monotonic()
        closed = False
        with sock:
            sock.sendall(b"GET /stable/targets/f.img HTTP/1.1\r\n")
            for _ in range(20):
                try:
                    sock.sendall(b"X")
                    sock.settimeout(0.5)
                    closed = sock.recv(4096) == b""
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                break
        took = time.monotonic() - started
    assert closed
    assert 1.5 - 0.1 <= took < 1.5 + 1.5, took


def test_endless_headers_are_cut(repo: Path) -> None:
    with serving(repo) as s:
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /stable/targets/f.img HTTP/1.1\r\n")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for i in range(100):
                    sock.sendall(b"X-%d: %s\r\n" % (i, b"y" * 2000))
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while piece := sock.recv(4096):
                    answer += piece
    assert b"payload" not in answer
    assert answer.startswith(b"HTTP/1.0 431 ")
