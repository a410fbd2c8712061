"""StreamHash: the whole-file SHA-256 the updater computes on a second thread."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from distbuild.node.hashing import StreamHash


def test_pieces_are_hashed_in_order() -> None:
    pieces = [os.urandom(n) for n in (1, 4096, 1 << 20, 0, 77, 3 << 20)]
    h = StreamHash()
    for piece in pieces:
        h.update(memoryview(piece)[:] if len(piece) % 2 else piece)
    assert h.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert h.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()  # cached
    with pytest.raises(ValueError):
        h.update(b"late")


def test_no_thread_is_left_behind() -> None:
    before = threading.active_count()
    empty = StreamHash()
    assert empty.hexdigest() == hashlib.sha256().hexdigest()
    failed = StreamHash()
    failed.update(os.urandom(1 << 20))
    failed.close()  # an install that gave up
    assert threading.active_count() == before
