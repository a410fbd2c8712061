"""The namespace runner the host-escape tests rely on: traps catch, read-only holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.sandbox import run_sandboxed, trap_untouched

pytestmark = pytest.mark.root


def test_trap_catches_a_write_and_the_host_never_sees_it(tmp_path: Path) -> None:
    trap = tmp_path / "trap"
    seeds = {trap: {"keep": b"seed"}}

    def escape() -> int:
        (trap / "keep").write_bytes(b"overwritten")
        return 7

    out = run_sandboxed(escape, traps=seeds)
    assert (out.returncode, out.value) == (0, 7), out.stderr
    assert out.traps[trap] == {"keep": b"overwritten"}
    with pytest.raises(AssertionError):
        trap_untouched(out, seeds)
    assert not trap.exists()  # made for the mount, removed after, never written


def test_readonly_except_writable(tmp_path: Path) -> None:
    ok, other = tmp_path / "ok", tmp_path / "other"
    ok.mkdir()
    other.mkdir()

    def write_both() -> None:
        (ok / "f").write_text("yes")
        (other / "f").write_text("no")

    out = run_sandboxed(write_both, writable=[ok])
    assert isinstance(out.error, OSError) and out.error.errno == 30  # EROFS
    assert (ok / "f").read_text() == "yes"
    assert not (other / "f").exists()


def test_argv_exit_code_output_and_timeout(tmp_path: Path) -> None:
    out = run_sandboxed([sys.executable, "-c", "print('hi'); raise SystemExit(3)"])
    assert (out.returncode, out.stdout) == (3, "hi\n")
    slow = run_sandboxed([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert slow.timed_out
