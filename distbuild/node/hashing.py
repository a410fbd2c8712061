"""The whole-file SHA-256 of a payload, computed on a second core while it is written.

With dm-verity every data block is hashed once to check it against the tree
before it is written, and the whole file is hashed again, in file order, to
compare with the channel's signed SHA-256. Both on one thread would cost a
node most of its write throughput; hashlib releases the GIL while it hashes,
so a thread that takes the written pieces in order runs the second hash in
parallel with the checks, the socket reads and the writes.
"""

from __future__ import annotations

import hashlib
import queue
import threading

Piece = bytes | memoryview
"""Bytes already written, immutable: the thread reads them later."""

_DEPTH = 1
"""Pieces waiting at most. One waits while the one before is hashed: enough to
keep both cores busy, and with a piece at most one network read (1 MiB) the
writer holds at most two more MiB than it would hashing by itself (the
update benchmark's peak RSS target is 40 MiB for the whole updater)."""


class StreamHash:
    """SHA-256 of the pieces given to :meth:`update`, in that order, on a thread.

    Pieces must not change after they are given (``bytes``, or views of
    ``bytes``). The thread starts with the first piece; :meth:`hexdigest`
    waits for the rest and ends it, :meth:`close` too (an install that failed).
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[Piece | None] = queue.Queue(maxsize=_DEPTH)
        self._thread: threading.Thread | None = None
        self._digest: str | None = None

    def _run(self) -> None:
        h, get = self._hash, self._queue.get
        while (piece := get()) is not None:
            h.update(piece)

    def update(self, piece: Piece) -> None:
        """Hash ``piece`` after the ones before it."""
        if self._digest is not None:
            raise ValueError("the hash is finished")
        if not len(piece):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="payload-sha256", daemon=True)
            self._thread.start()
        self._queue.put(piece)

    def hexdigest(self) -> str:
        """The SHA-256 of everything given, once the thread has hashed it."""
        if self._digest is None:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            self._digest = self._hash.hexdigest()
        return self._digest

    def close(self) -> None:
        """End the thread (whatever is queued is still hashed, then dropped)."""
        self.hexdigest()
