"""A bad update.yaml makes the daemon idle with the error in ``status``, not crash-loop.

The real ``distbuild-update`` in a subprocess, on a node tree under a temporary root.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.node import Node

CLI = [sys.executable, "-m", "distbuild.node.cli"]

BAD = {
    "unknown key": ("channel_url: http://127.0.0.1:9/\nbogus_key: 1\n", "unknown key 'bogus_key'"),
    "bad value": ("channel_url: http://127.0.0.1:9/\npoll_interval: -5\n", "poll_interval"),
    "unreadable": ("channel_url: http://127.0.0.1:9/\nretries: [1, 2\n", "flow list"),
    "nested": ("channel_url: http://127.0.0.1:9/\nx:\n  y: 1\n", "nested blocks"),
}


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path / "node")
    n.setup("http://127.0.0.1:9/", b"{}", "v1")
    return n


def _config(node: Node) -> Path:
    return node.root / "etc/distbuild/update.yaml"


def _cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--root", str(node.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", sorted(BAD))
def test_status_shows_the_config_error(node: Node, case: str) -> None:
    text, words = BAD[case]
    _config(node).write_text(text)
    human = _cli(node, "status")
    assert human.returncode == 3, human.stderr
    assert "config:     ERROR" in human.stdout and words in human.stdout
    assert "booted:     slot a, version v1" in human.stdout  # the rest is still there
    assert human.stderr.startswith("error: ") and words in human.stderr
    as_json = _cli(node, "status", "--json")
    assert as_json.returncode == 3
    assert words in json.loads(as_json.stdout)["config_error"]
    once = _cli(node, "run", "--once")  # one round: a clear error, not an internal one
    assert once.returncode == 3 and "error: " in once.stderr and "Traceback" not in once.stderr


def test_the_daemon_idles_on_a_bad_config_and_resumes_when_fixed(node: Node) -> None:
    good = _config(node).read_text()
    _config(node).write_text(BAD["unknown key"][0])
    proc = subprocess.Popen(
        [*CLI, "--root", str(node.root), "run", "--config-retry", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # ~10 re-reads
        assert proc.poll() is None, "the daemon exited on a bad config"
        status = _cli(node, "status")
        assert "unknown key 'bogus_key'" in status.stdout
        _config(node).write_text(good)  # fixed: it polls again (and fails to connect)
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode not in (None, 70), err
    assert "Traceback" not in err
    assert err.count("unknown key 'bogus_key'") == 1, err  # said once, not every re-read
    assert "usable again" in err
    assert "channel stable" in err  # it went back to polling the channel
    assert _cli(node, "status").returncode == 0
