"""The process door: the caller's SOURCE_DATE_EPOCH never leaks into a tool."""

from __future__ import annotations

import pytest

from distbuild.core.run import run, tool_env


def test_epoch_from_the_environment_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert "SOURCE_DATE_EPOCH" not in tool_env(["/usr/bin/mcopy"], None)
    out = run(["env"], capture=True).stdout.decode()
    assert "SOURCE_DATE_EPOCH" not in out


def test_tools_get_the_epoch_their_caller_passes() -> None:
    env = tool_env(["mcopy"], {"SOURCE_DATE_EPOCH": "99"})
    assert env["SOURCE_DATE_EPOCH"] == "99"


def test_mksquashfs_never_gets_it() -> None:
    # It refuses SOURCE_DATE_EPOCH beside -mkfs-time/-all-time.
    assert "SOURCE_DATE_EPOCH" not in tool_env(["/usr/bin/mksquashfs"], {"SOURCE_DATE_EPOCH": "9"})
