"""``distbuild-update health-failed``: what the image's health check calls when
it fails (issue 12). A slot on trial rolls back to the good slot by itself and
reboots; a slot already good is reported in ``status`` and never rebooted (a
broken check must not loop reboots). Real boot control on a node tree
(tests/support/node.py), the CLI run as its own process, as init runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from distbuild.core.bootctl.base import SlotBoot
from tests.support.node import Node

REASON = "containerd does not answer ctr version (failed to load TOML)"


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "distbuild.node.cli", "--root", str(node.root)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def status(node: Node) -> dict:  # type: ignore[type-arg]
    done = cli(node, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_slot_on_trial_that_fails_its_health_check_rolls_back(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    node.setup("http://127.0.0.1:9/", b"{}", "v1")  # v1 good in slot a
    bc = node.bootctl()
    bc.install("b", SlotBoot("v2", b"kernel v2", b"initrd v2", "distbuild.version=v2"))
    bc.set_next("b", 3)
    node.show("b", "v2")  # v2 came up from b, on trial

    done = cli(node, "health-failed", REASON, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["message"] == "rebooting into v1"
    assert node.reboot_marker.exists()
    assert node.bootctl().boot_order()[0] == "a"
    s = status(node)
    (rolled,) = s["rolled_back"]
    assert rolled["version"] == "v2" and rolled["slot"] == "b"
    assert rolled["reason"] == (
        f"rolled back to v1 in slot a: health check failed on slot b (v2): {REASON}"
    )
    assert [f["action"] for f in s["failures"]] == ["health"]
    text = cli(node, "status").stdout
    assert f"rolled back: v2 (slot b, {rolled['at']}): rolled back to v1" in text


def test_a_good_slot_that_fails_its_health_check_is_reported_not_rebooted(
    tmp_path: Path,
) -> None:
    node = Node(tmp_path / "node")
    node.setup("http://127.0.0.1:9/", b"{}", "v1")  # v1 good in slot a, booted
    order = node.bootctl().boot_order()

    done = cli(node, "health-failed", REASON)

    assert done.returncode == 1
    message = f"health check failed on slot a (v1), which is good; not rolling back: {REASON}"
    assert done.stdout == message + "\n"
    assert not node.reboot_marker.exists()
    assert node.bootctl().boot_order() == order
    assert node.bootctl().states()["a"].good
    s = status(node)
    assert s["rolled_back"] == [] and s["pending"] is None
    assert s["last_result"]["message"] == message
    assert s["failures"][-1]["action"] == "health"


def test_a_trial_slot_with_nothing_good_to_fall_back_to_says_so(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    node.setup("http://127.0.0.1:9/", b"{}", "v1")
    bc = node.bootctl()
    bc.install("b", SlotBoot("v2", b"kernel v2", b"initrd v2", "distbuild.version=v2"))
    bc.set_next("b", 3)
    bc.mark_good("b")
    bc.install("a", SlotBoot("v3", b"kernel v3", b"initrd v3", "distbuild.version=v3"))
    bc.set_next("a", 3)
    node.show("a", "v3")  # v3 on trial in a; b (v2) good: this one can roll back
    assert cli(node, "health-failed", REASON).returncode == 0
    node.reboot_marker.unlink()

    # Now b is on trial again (the rollback's boot) but a was never blessed.
    node.show("b", "v2")
    bc = node.bootctl()
    bc.install("a", SlotBoot("v4", b"kernel v4", b"initrd v4", "distbuild.version=v4"))
    bc.set_next("b", 3)
    done = cli(node, "health-failed", REASON)
    assert done.returncode == 1
    assert "\nerror: slot a holds no version known to be good" in done.stderr
    assert "hint: " in done.stderr and "Traceback" not in done.stderr
    assert not node.reboot_marker.exists()
    assert status(node)["failures"][-1]["message"].startswith("health check failed on slot b")
