"""The network installer's kernel command line: strict, and nothing else is read from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.node.config import NodePaths
from distbuild.node.netdisk import DiskRefused, pick
from distbuild.node.netinstall import CmdlineError, InstallParams, parse_cmdline

BASE = (
    "BOOT_IMAGE=x console=ttyS0 distbuild.channel_url=http://10.0.2.2:8080/ "
    "distbuild.channel=stable distbuild.image=node distbuild.board=qemu quiet"
)


def test_the_installer_words_are_read_and_others_ignored() -> None:
    assert parse_cmdline(BASE) == InstallParams(
        "http://10.0.2.2:8080/", "stable", "node", "qemu", None, False
    )
    p = parse_cmdline(BASE + " install_disk=/dev/nvme0n1 install_wipe=1")
    assert (p.disk, p.wipe) == ("/dev/nvme0n1", True)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (" distbuild.channel=beta", "twice"),
        (" install_wipe=yes", "install_wipe='yes'"),
        (" install_wipe", "without a value"),
        (" install_disk=", "without a value"),
    ],
)
def test_bad_words_are_refused(extra: str, words: str) -> None:
    with pytest.raises(CmdlineError) as e:
        parse_cmdline(BASE + extra)
    assert words in e.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("distbuild.channel_url", "file:///etc/passwd"),
        ("distbuild.channel_url", "http://"),
        ("distbuild.channel_url", 'http://host/a"b'),
        ("distbuild.channel", "../../x"),
        ("distbuild.image", "node/../x"),
        ("distbuild.board", ".."),
    ],
)
def test_hostile_values_are_refused(key: str, value: str) -> None:
    words = [w for w in BASE.split() if not w.startswith(key + "=")]
    with pytest.raises(CmdlineError):
        parse_cmdline(" ".join([*words, f"{key}={value}"]))


def test_missing_words_are_named() -> None:
    with pytest.raises(CmdlineError) as e:
        parse_cmdline("console=ttyS0 distbuild.channel=stable")
    assert "distbuild.channel_url=" in e.value.message and "distbuild.board=" in e.value.message


@pytest.mark.parametrize("value", ["../sda", "/dev/../sda", "sda/x", "/etc/passwd", "SDA;x"])
def test_install_disk_must_be_a_disk_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(DiskRefused) as e:
        pick(NodePaths(tmp_path), value)
    assert "not a disk name" in e.value.message
