"""The updater as the image gets it: install_updater's tree, run by a bare interpreter.

The interpreter runs with ``-I -S``: no site-packages, so only the standard
library and what ``install_updater`` put into the tree are importable, as on a
node (cryptography is not there either: securesystemslib's pure-Python Ed25519
verifies the channel). It updates a node tree from a real channel over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distbuild.channel.serve import serving
from distbuild.core.errors import DistbuildError
from distbuild.rootfs.install_updater import (
    CONFIG,
    LAUNCHER,
    PYTHON_DIR,
    TRUST_ANCHOR,
    VENDOR_DIR,
    install_updater,
    node_files,
)
from tests.support.node import Node, make_channel, payload


def installed_modules() -> set[str]:
    """The modules the image's updater gets: its own files and their packages."""
    names = {".".join(p.with_suffix("").parts).removesuffix(".__init__") for p in node_files()}
    return names | {n.rsplit(".", 1)[0] for n in names if "." in n}


def bare_python(image: Path, *args: str) -> subprocess.CompletedProcess[str]:
    launcher = (image / LAUNCHER).read_text()
    assert f'sys.path.insert(0, "/{VENDOR_DIR}")' in launcher
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(image / VENDOR_DIR)!r}, {str(image / PYTHON_DIR)!r}]\n"
        "for name in ('cryptography', 'requests', 'yaml', 'click'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(name + ' must not be importable here')\n"
        "from distbuild.node.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"installed = {sorted(installed_modules())!r}\n"
        "bad = sorted(m for m in sys.modules if m.startswith('distbuild.') and m not in installed)\n"
        "assert not bad, bad\n"
        "sys.exit(code)\n"
    )
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *args], capture_output=True, text=True
    )


def test_installed_updater_updates_a_node_with_only_its_own_files(tmp_path: Path) -> None:
    chan = make_channel(tmp_path)
    chan.publish("v1", size=1 << 20)
    chan.publish("v2", size=1 << 20)
    image = tmp_path / "image"
    with serving(chan.repo) as server:
        written = install_updater(
            image,
            channel_url=server.url,
            channel="stable",
            root_json=chan.root_json,
            config={"reboot": "kured"},
        )
        assert {LAUNCHER, CONFIG, TRUST_ANCHOR} <= set(written)
        assert (image / LAUNCHER).stat().st_mode & 0o111
        assert (image / TRUST_ANCHOR).read_bytes() == chan.root_json

        node = Node(tmp_path / "node")
        node.setup(server.url, chan.root_json, "v1")
        # The node's config is the one the image build wrote, plus where this
        # test keeps the slot devices and the boot partition.
        text = (image / CONFIG).read_text()
        for key in ("boot_dir", "slot_a", "slot_b"):
            text += f"{key}: {json.dumps(node.config[key])}\n"
        (node.root / CONFIG).write_text(text)

        check = bare_python(image, "--root", str(node.root), "check", "--json")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout)["version"] == "v2"
        apply = bare_python(image, "--root", str(node.root), "apply")
        assert apply.returncode == 0, apply.stderr
        assert "kured reboots it" in apply.stdout
    with node.device("b").open("rb") as f:
        assert f.read(1 << 20) == payload("v2", "armv7", 1 << 20)
    assert (node.root / "var/run/reboot-required").is_file()


def test_a_trust_anchor_that_is_not_root_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DistbuildError, match="not TUF root metadata"):
        install_updater(tmp_path, root_json=b'{"signed": {"_type": "timestamp"}}')
