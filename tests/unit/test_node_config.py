"""The node config's YAML subset, its checks, and the release file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distbuild.core.errors import DistbuildError
from distbuild.node.config import (
    ConfigError,
    load_config,
    parse_document,
    parse_duration,
    read_release,
)

EXAMPLE = """\
# /etc/distbuild/update.yaml
channel_url: https://updates.example.org/channels   # where 'distbuild serve' or a CDN is
channel: beta
board: "bananapi-m1"
reboot: fleetlock
fleetlock_url: 'http://lock.local:3333'
health_check: [/usr/lib/distbuild/health-check, --quick]
poll_interval: 1h30m
poll_jitter: 10m
tries: 2
allow_downgrade: false
seed: 17
node_id:
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "update.yaml"
    path.write_text(text)
    return path


def test_example_parses_like_yaml_does(tmp_path: Path) -> None:
    ours, lines = parse_document(EXAMPLE, "update.yaml")
    assert ours == yaml.safe_load(EXAMPLE)
    assert lines["reboot"] == 5
    c = load_config(write(tmp_path, EXAMPLE))
    assert c.channel_url == "https://updates.example.org/channels"
    assert (c.channel, c.board, c.reboot, c.tries, c.seed) == (
        "beta",
        "bananapi-m1",
        "fleetlock",
        2,
        17,
    )
    assert c.health_check == ("/usr/lib/distbuild/health-check", "--quick")
    assert (c.poll_interval, c.poll_jitter) == (5400.0, 600.0)
    assert c.node_id is None and c.allow_downgrade is False


def test_json_is_accepted(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '{"channel_url": "http://h/", "reboot": "never", "tries": 5}'))
    assert (c.reboot, c.tries) == ("never", 5)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("channel: stable\n", "channel_url is required"),
        ("channel_url: http://h/\nreboots: never\n", ":2: unknown key 'reboots'"),
        ("channel_url: http://h/\nreboot: later\n", ":2: reboot: must be one of"),
        ("channel_url: http://h/\ntries: 12\n", ":2: tries: must be between 1 and 9"),
        ("channel_url: http://h/\ntries: three\n", ":2: tries: must be an integer"),
        ("channel_url: http://h/\npoll_interval: soon\n", ":2: poll_interval: invalid duration"),
        ("channel_url: http://h/\nreboot: fleetlock\n", "needs fleetlock_url"),
        ("channel_url: http://h/\nfleetlock:\n  url: x\n", ":3: nested blocks are not supported"),
        ("channel_url: http://h/\nchannel: 'beta\n", ":2: channel: unterminated"),
        ("channel_url: http://h/\nchannel: stable\nchannel: beta\n", ":3: channel is given twice"),
        ("channel_url: http://h/\nboot_chain: grub\n", ":2: boot_chain: must be one of"),
        ("channel_url: http://h/\n- item\n", ":2: expected 'key: value'"),
        ('{"channel_url": ', "invalid JSON"),
    ],
)
def test_mistakes_name_the_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert words in e.value.message


def test_missing_config_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "none.yaml")
    assert e.value.hint and "channel_url" in e.value.hint


def test_comments_and_quotes() -> None:
    doc, _ = parse_document(
        "a: 'x # y'  # comment\nb: \"it's\"\nc: [1, 'a,b', true]\nd: x#y\n", "f"
    )
    assert doc == {"a": "x # y", "b": "it's", "c": [1, "a,b", True], "d": "x#y"}


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration(30) == 30
    assert parse_duration("1d2h3m4s") == 86400 + 7200 + 180 + 4
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("1x")


def test_release_file(tmp_path: Path) -> None:
    path = tmp_path / "release"
    path.write_text("ARCH=arm64\nIMAGE=node\nVERSION=2026.1.2\nBOARD=rpi4\n")
    r = read_release(path)
    assert (r.image, r.version, r.arch, r.board) == ("node", "2026.1.2", "arm64", "rpi4")
    path.write_text("ARCH=sparc\nIMAGE=node\nVERSION=1\n")
    with pytest.raises(DistbuildError, match="unknown ARCH"):
        read_release(path)
    with pytest.raises(DistbuildError, match="does not look like a distbuild node"):
        read_release(tmp_path / "missing")
