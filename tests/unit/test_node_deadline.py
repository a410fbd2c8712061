"""Every node request has a wall-clock deadline; metadata retries 5xx within a round.

Real sockets on 127.0.0.1, a real TUF channel (published by the project's own
code) and the real updater; the servers trickle response headers one byte
every half second, which no per-receive timeout notices.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from distbuild.node.config import Config, ConfigError, load_config
from distbuild.node.http import Http, Limits, TooSlow, TransferError
from distbuild.node.reboot import FleetLock
from distbuild.node.updater import limits
from tests.support.node import Channel, Misbehave, Node, fault_server, make_channel
from tests.support.stall import Stall, stalling_server, tls_trickle, within

DEADLINE = 1.5
SLACK = 1.5  # thread start-up, the 404 probe for a newer root, a loaded machine


@pytest.fixture
def chan(tmp_path: Path) -> Channel:
    c = make_channel(tmp_path)
    c.publish("v1", size=256 << 10)
    c.publish("v2", size=256 << 10)
    return c


def test_trickled_headers_are_cut_at_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    stall = Stall(trickle=r"/f$")
    with stalling_server(tmp_path, stall) as url:
        http = Http(Limits(read_timeout=5, deadline=DEADLINE))
        took, error = within(30, lambda: http.get(f"{url}/f", 100))
    assert isinstance(error, TooSlow), error
    assert "deadline" in error.message
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took
    assert stall.trickled == 1


@pytest.mark.parametrize("stall_handshake", [False, True], ids=["headers", "handshake"])
def test_tls_stalls_are_cut_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stall_handshake: bool
) -> None:
    with tls_trickle(tmp_path, stall_handshake=stall_handshake) as host:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
        http = Http(Limits(read_timeout=30, deadline=DEADLINE))
        took, error = within(30, lambda: http.get(f"https://{host}/f", 100))
    assert isinstance(error, TooSlow), error
    assert "deadline" in error.message
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took


def test_the_deadline_does_not_cut_a_normal_request(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data" * 1000)
    with stalling_server(tmp_path, Stall()) as url:
        http = Http(Limits(read_timeout=5, deadline=DEADLINE))
        assert http.get(f"{url}/f", 1 << 20) == b"data" * 1000
        time.sleep(DEADLINE + 0.5)  # the watchdog of the finished request must not fire late
        assert http.get(f"{url}/f", 1 << 20) == b"data" * 1000


def test_metadata_with_trickled_headers_is_cut(tmp_path: Path, chan: Channel) -> None:
    stall = Stall(trickle=r"timestamp\.json$")
    with stalling_server(chan.repo, stall) as url:
        node = Node(tmp_path / "node")
        node.setup(url, chan.root_json, "v1", request_deadline=DEADLINE)
        took, error = within(30, lambda: node.updater().check())
    assert isinstance(error, TransferError), error
    assert "deadline" in error.message
    assert took < DEADLINE + SLACK, took
    assert stall.trickled == 1  # a cut-off is not retried within the round
    last = node.status()["last_result"]
    assert not last["ok"] and "deadline" in last["message"]


def test_payload_with_trickled_headers_is_cut(tmp_path: Path, chan: Channel) -> None:
    stall = Stall(trickle=r"root\.img$")
    with stalling_server(chan.repo, stall) as url:
        node = Node(tmp_path / "node")
        node.setup(url, chan.root_json, "v1", request_deadline=DEADLINE, retries=1)
        took, error = within(30, lambda: node.updater().apply())
    assert isinstance(error, TransferError), error
    assert "deadline" in error.message
    assert took < DEADLINE + 2 * SLACK, took
    assert stall.trickled == 1
    assert node.status()["pending"] is None


def test_fleetlock_with_trickled_headers_is_cut(tmp_path: Path) -> None:
    stall = Stall(trickle=r"pre-reboot")
    with stalling_server(tmp_path, stall) as url:
        lock = FleetLock(url, "node-1", "default", Http(Limits(read_timeout=5, deadline=DEADLINE)))
        took, error = within(30, lock.pre_reboot)
    assert isinstance(error, TransferError), error
    assert "FleetLock" in error.message and "deadline" in error.message
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took
    assert stall.trickled == 1


def test_a_trickled_body_is_still_cut_by_the_rate_floor(tmp_path: Path, chan: Channel) -> None:
    fault = Misbehave(rate=4096)
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(
            server.url,
            chan.root_json,
            "v1",
            min_rate=256 * 1024,
            rate_window=0.5,
            retries=1,
            request_deadline=60,
        )
        took, error = within(30, lambda: node.updater().apply())
    assert isinstance(error, TransferError), error
    assert "server too slow" in error.message
    assert took < 5, took


def test_metadata_answered_5xx_is_asked_again_within_the_round(
    tmp_path: Path, chan: Channel
) -> None:
    stall = Stall(fail=r"timestamp\.json$", failures=2)
    with stalling_server(chan.repo, stall) as url:
        node = Node(tmp_path / "node")
        node.setup(url, chan.root_json, "v1")
        outcome, candidate = node.updater().check()
    assert outcome.ok and candidate is not None and candidate.version == "v2"
    assert stall.failed == 2


def test_metadata_answered_5xx_forever_is_a_clear_error(tmp_path: Path, chan: Channel) -> None:
    stall = Stall(fail=r"timestamp\.json$")
    with stalling_server(chan.repo, stall) as url:
        node = Node(tmp_path / "node")
        node.setup(url, chan.root_json, "v1", retries=3)
        took, error = within(30, lambda: node.updater().check())
    assert isinstance(error, TransferError), error
    assert "HTTP 503" in error.message and "tried 3 times" in error.message
    assert stall.failed == 3
    assert took < 10
    last = node.status()["last_result"]
    assert not last["ok"] and "HTTP 503" in last["message"]


def test_a_body_at_the_floor_gets_the_time_it_needs(tmp_path: Path, chan: Channel) -> None:
    # 256 KiB at 128 KiB/s takes 2 s, longer than the 1 s deadline for the headers;
    # the body's deadline grows with its length at the floor (64 KiB/s: 1 + 0.5 + 4 s).
    fault = Misbehave(rate=128 * 1024)
    with fault_server(chan.repo, fault) as server:
        node = Node(tmp_path / "node")
        node.setup(
            server.url,
            chan.root_json,
            "v1",
            min_rate=64 * 1024,
            rate_window=0.5,
            retries=1,
            request_deadline=1,
        )
        took, error = within(30, lambda: node.updater().apply())
    assert error is None, error
    assert took > 1.5, took  # it really was slower than the headers' deadline
    assert fault.hits == 1
    assert node.boot() == ("b", "v2")


def test_the_deadline_is_set_in_update_yaml(tmp_path: Path) -> None:
    path = tmp_path / "update.yaml"
    path.write_text("channel_url: http://127.0.0.1:9/\nrequest_deadline: 90s\nretries: 3\n")
    got = limits(load_config(path))
    assert (got.deadline, got.tries) == (90.0, 3)
    assert got.body_deadline(16 * 1024 * 600) == 90 + 60 + 600  # 600 s at the 16 KiB/s floor
    assert limits(Config(channel_url="x")).deadline == 120.0  # the default
    path.write_text("channel_url: http://127.0.0.1:9/\nrequest_deadline: 0\n")
    with pytest.raises(ConfigError, match="request_deadline: must be more than zero"):
        load_config(path)
