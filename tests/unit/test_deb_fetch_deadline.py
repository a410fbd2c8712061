"""The .deb fetcher cuts off a mirror that trickles its answer (real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.core.errors import FetchError
from distbuild.rootfs import fetch
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import LockedPackage
from tests.support.stall import raw_trickle, within


def test_trickled_headers_are_cut_and_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "DEADLINE", 1.0)
    with raw_trickle(0.5) as host:
        pkg = LockedPackage(
            "hello", "1.0", "amd64", "pool/h/hello.deb", 4, "ab" * 32, f"http://{host}"
        )
        took, error = within(60, lambda: DebCache(tmp_path).ensure([pkg]))
    assert isinstance(error, FetchError), error
    assert "no complete answer within 1 s" in error.message
    assert 4 * 1.0 <= took < 4 * 1.0 + 4 + 3, took  # 4 tries, 3 back-offs (≤ 3.5 s)
    assert not list((tmp_path / "debs").iterdir())  # nothing half-written
