"""Streaming a root image into the inactive slot: no temp copy, hash while writing.

The payload goes from the socket straight into the slot's block device (or a
file standing in for it), hashed on the way (on a second core,
:class:`~distbuild.node.hashing.StreamHash`). Before the first byte the
server's answer is checked against the signed length (a server announcing
more, or a different file size, is refused); reading stops at the signed
length whatever the server sends. Every few MiB the device is synced and the
offset recorded on ``data`` (:class:`~distbuild.node.state.Progress`), so a
power cut costs at most that much again: the next attempt re-hashes what is
already in the slot and asks for the rest with an HTTP Range request.
Transient failures (connection lost, stall, 5xx) are retried with back-off by
tenacity, each attempt resuming where the last stopped.

With the dm-verity parameters of the release's signed ``boot.json``
(:class:`~distbuild.node.verity.VerityParams`), nothing unverified reaches the
slot: the hash tree at the end of the image is fetched first (a Range request;
it is under 1% of the image) and checked against the signed root hash, then
every 4 KiB data block is checked against its level-0 digest before it is
written, and the verified tree is written last. A tampered payload is refused
at its first altered block, with nothing of that block written. Without them
(channels published before boot.json carried them) only the whole-file hash
below can tell.

Only when every byte is in, the SHA-256 matches the channel's metadata and a
read-back of the device (page cache dropped first) hashes the same, does the
caller make the slot bootable.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    wait_random_exponential,
)

from distbuild.core.errors import DistbuildError
from distbuild.node.hashing import StreamHash
from distbuild.node.http import CHUNK, Body, Http, TooSlow, TransferError
from distbuild.node.state import Progress, StateStore
from distbuild.node.tufclient import Refused, Target
from distbuild.node.verity import BLOCK, Leaves, VerityMismatch, VerityParams, verify_tree

log = logging.getLogger("distbuild.node")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    wait: float = 2.0
    wait_max: float = 60.0


def checkpoint_interval(length: int) -> int:
    """Bytes between device syncs: at most 1/64 of the payload (≤ 1.6% to fetch again)."""
    return max(64 * 1024, min(8 << 20, length // 64))


def device_size(device: Path) -> int:
    """The size of a block device, or of a regular file standing in for one."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        raise DistbuildError(
            f"slot device {device} does not exist",
            hint="is the disk partitioned by distbuild (labels root-a, root-b)?",
        ) from None
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not stat.S_ISBLK(st.st_mode):
        raise DistbuildError(f"slot device {device} is neither a block device nor a file")
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


READ_PIECE = 256 << 10
"""Bytes read from the slot at a time; a few are alive at once (read, queued, hashed)."""


def hash_device(fd: int, length: int) -> str:
    """SHA-256 (hex) of the first ``length`` bytes of an open device; the hashing
    runs on a second core while the next piece is read."""
    h = StreamHash()
    try:
        offset = 0
        while offset < length:
            piece = os.pread(fd, min(READ_PIECE, length - offset), offset)  # new bytes each
            if not piece:
                raise DistbuildError(f"the slot device ends at {offset} bytes, before {length}")
            h.update(piece)
            offset += len(piece)
        return h.hexdigest()
    finally:
        h.close()


class PayloadWriter:
    """Writes one target into one slot device, resumably; block by block against
    its dm-verity tree when ``verity`` (from the signed boot.json) is given."""

    def __init__(
        self,
        http: Http,
        store: StateStore,
        target: Target,
        slot: str,
        device: Path,
        retry: RetryPolicy | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        verity: VerityParams | None = None,
    ) -> None:
        self.http = http
        self.store = store
        self.target = target
        self.slot = slot
        self.device = device
        self.retry = retry or RetryPolicy()
        self.on_progress = on_progress
        self.offset = 0
        self.hasher = StreamHash()  # the whole file, in file order, on a second core
        self.interval = checkpoint_interval(target.length)
        self._synced = 0
        self.resumed_from = 0
        self._failures = 0  # failed attempts since the last one that made progress
        self._failed_at = 0
        self.verity = verity
        self.leaves: Leaves | None = None  # level-0 digests, once the tree is verified
        self._tree = bytearray()  # the verified tree, written after the data
        self._tail = bytearray()  # the start of a data block whose end has not arrived

    def check_fits(self) -> None:
        """Refuse a payload larger than the slot, or one its verity parameters do not
        describe, before anything is written."""
        t = self.target
        size = device_size(self.device)
        if t.length > size:
            raise Refused(
                f"{t.path} is {t.length} bytes, larger than slot "
                f"{self.slot} ({self.device}, {size} bytes)",
                hint="the image outgrew the disk layout; reflash with a larger root partition",
            )
        v = self.verity
        if v is not None and t.length != v.image_size:
            raise Refused(
                f"{t.path} is {t.length} bytes, but its signed dm-verity parameters "
                f"({v.data_blocks} data blocks and a {v.tree_size}-byte hash tree) describe "
                f"{v.image_size}; refused before writing",
                hint="the release's boot.json and root image come from different builds",
            )

    def write(self) -> None:
        """Fetch, write, verify. Raises Refused (never retried) or TransferError."""
        self.check_fits()
        fd = os.open(self.device, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            if self.verity is not None:
                self._retrying(self._fetch_tree)
            self._resume(fd)
            self._retrying(lambda: self._attempt(fd))
            if self.verity is not None:
                self._write_tree(fd)
            self._sync(fd, force=True)
            digest = self.hasher.hexdigest()
            self.leaves, self._tree = None, bytearray()  # the read-back needs neither
            if digest != self.target.sha256:
                self.store.clear_progress()
                raise Refused(
                    f"{self.target.path}: the payload's SHA-256 {digest[:16]}… is not the "
                    f"signed {self.target.sha256[:16]}… (tampered or corrupted); "
                    f"slot {self.slot} stays unbootable",
                    hint="the server or something between it and the node altered the file",
                )
            self._read_back(fd)
        finally:
            self.hasher.close()
            os.close(fd)
        # Recorded as complete, so a failure before the slot is flipped does
        # not fetch the payload again (the next attempt re-verifies it).
        t = self.target
        self.store.save_progress(
            Progress(t.path, t.sha256, t.length, self.slot, str(self.device), t.length)
        )

    # the steps

    def _resume(self, fd: int) -> None:
        """Continue from the recorded offset if the same payload was going to the same slot."""
        p = self.store.progress()
        t = self.target
        if p is None or not p.matches(t.path, t.sha256, t.length, self.slot, str(self.device)):
            self.store.clear_progress()
            return
        offset = p.offset
        if self.verity is not None and offset < t.length:
            # Data is written in whole verified blocks, the tree in one go at the end.
            offset = min(offset, self.verity.hash_offset) // BLOCK * BLOCK
        if not 0 < offset <= t.length:
            return
        # The bytes before the offset were synced before it was recorded;
        # hash them again from the device instead of fetching them again.
        bad = self._rehash(fd, offset)
        if bad is not None:
            log.warning(
                "slot %s holds data block %d unlike the signed hash tree; writing %s from the start",
                self.slot,
                bad,
                t.path,
            )
            self._new_hash()
            return
        self.offset = self._synced = self.resumed_from = offset
        log.info("resuming %s at byte %d of %d", t.path, offset, t.length)

    def _rehash(self, fd: int, length: int) -> int | None:
        """Hash the slot's first ``length`` bytes, checking its data blocks against the
        tree if there is one; the first block that does not match, or None."""
        data_end = self.verity.hash_offset if self.verity is not None else 0
        offset = 0
        while offset < length:
            size = min(CHUNK, length - offset)  # CHUNK is whole blocks
            piece = os.pread(fd, size, offset)  # a new bytes: the hash thread keeps it
            if len(piece) != size:
                raise DistbuildError(f"the slot device ends before byte {length}")
            if self.leaves is not None and offset < data_end:
                checked = memoryview(piece)[: min(size, data_end - offset)]
                bad = self.leaves.first_mismatch(offset // BLOCK, checked)
                if bad is not None:
                    return bad
            self.hasher.update(piece)
            offset += size
        return None

    def _new_hash(self) -> None:
        self.hasher.close()
        self.hasher = StreamHash()

    def _retrying(self, step: Callable[[], None]) -> None:
        """Run ``step`` until it succeeds, retrying transient failures with back-off."""
        for attempt in Retrying(
            stop=self._stop,
            wait=wait_random_exponential(multiplier=self.retry.wait, max=self.retry.wait_max),
            retry=retry_if_exception(_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                step()

    def _open(self, start: int, end: int | None = None) -> Body:
        """The payload from byte ``start`` (up to ``end``), its length and size checked
        against the signed length before any byte is read. A server that ignores
        the Range request answers with the whole file (``body.start`` 0)."""
        t = self.target
        # Without a Content-Length the body still gets the time the rate floor allows.
        expect = (t.length if end is None else end) - start
        body = self.http.open(t.url, start=start, end=end, expect=expect)
        if body.response.status == 206:
            if body.start != start:
                body.close()
                raise TransferError(
                    f"{t.url}: asked for the bytes from {start}, the server sent those "
                    f"from {body.start}",
                    retryable=False,
                )
            want = (t.length if end is None else end) - start
        else:
            want = t.length
        if body.length is not None and body.length != want:
            body.close()
            more = "more" if body.length > want else "fewer"
            raise Refused(
                f"{t.url}: server announces {body.length} bytes from offset {body.start}, "
                f"{more} than the {want} expected of the signed length ({t.length}); "
                "refused before writing",
                hint="the file on the server is not the one the channel signed",
            )
        if body.total is not None and body.total != t.length:
            body.close()
            raise Refused(
                f"{t.url}: the server's file is {body.total} bytes, not the signed {t.length}",
                hint="the file on the server is not the one the channel signed",
            )
        return body

    def _restart(self) -> None:
        """The server ignored a Range request (200): the whole file comes again."""
        log.info("%s: server ignored the range request; starting over", self.target.url)
        self.offset = self._synced = 0
        self._new_hash()

    def _advance(self, fd: int, n: int) -> None:
        self.offset += n
        if self.offset - self._synced >= self.interval:
            self._sync(fd)
        if self.on_progress is not None:
            self.on_progress(self.offset, self.target.length)

    def _attempt(self, fd: int) -> None:
        if self.verity is not None:
            self._attempt_blocks(fd)
            return
        t = self.target
        if self.offset >= t.length:
            return
        body = self._open(self.offset)
        if body.start != self.offset:
            self._restart()
        want = t.length - self.offset
        for chunk in self.http.chunks(body, want):
            self._pwrite(fd, chunk)
            self.hasher.update(chunk)
            self._advance(fd, len(chunk))
        if self.offset < t.length:
            raise TransferError(f"{t.url}: connection closed at byte {self.offset} of {t.length}")
        if body.length is None and self.http.has_more(body):
            raise Refused(
                f"{t.url}: server sent more than the signed {t.length} bytes; cut off",
                hint="the file on the server is not the one the channel signed",
            )

    # with dm-verity

    def _fetch_tree(self) -> None:
        """Fetch the hash tree (the image's end) and check it against the signed root hash."""
        v, t = self.verity, self.target
        assert v is not None
        tree = bytearray(v.tree_size)  # filled in place: the only copy the updater holds
        if v.tree_size:
            body = self._open(v.hash_offset)
            skip = v.hash_offset - body.start
            if skip:
                log.info("%s: server ignored the range request; reading on to the tree", t.url)
            got = 0
            with memoryview(tree) as into:
                for chunk in self.http.chunks(body, t.length - body.start):
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    piece = memoryview(chunk)[skip:]
                    skip = 0
                    into[got : got + len(piece)] = piece
                    got += len(piece)
            if got < v.tree_size:
                raise TransferError(
                    f"{t.url}: connection closed after {got} of the hash tree's {v.tree_size} bytes"
                )
        try:
            self.leaves = verify_tree(v, tree)
        except VerityMismatch as e:
            # Progress stays: the bytes it covers were checked against the signed
            # tree when written, and are checked again on resume.
            raise Refused(
                f"{t.path}: its dm-verity hash tree does not match the signed root hash "
                f"{v.roothash[:16]}… ({e}); refused before writing anything to slot {self.slot}",
                hint="the server or something between it and the node altered the file",
            ) from None
        self._tree = tree
        log.info("%s: hash tree verified against the signed root hash", t.path)

    def _attempt_blocks(self, fd: int) -> None:
        """Stream the data blocks, each checked against the tree before it is written."""
        v, t = self.verity, self.target
        assert v is not None
        self._tail.clear()  # a block cut short by the last attempt comes again whole
        if self.offset >= v.hash_offset:
            return
        body = self._open(self.offset, v.hash_offset)
        if body.start != self.offset:
            self._restart()
        for chunk in self.http.chunks(body, v.hash_offset - self.offset):
            self._feed(fd, chunk)
        if self.offset < v.hash_offset:
            raise TransferError(f"{t.url}: connection closed at byte {self.offset} of {t.length}")

    def _feed(self, fd: int, chunk: bytes) -> None:
        """Write the whole blocks ``chunk`` completes; keep a partial one for the next."""
        view = memoryview(chunk)
        tail = self._tail
        if tail:
            need = BLOCK - len(tail)
            tail += view[:need]
            view = view[need:]
            if len(tail) < BLOCK:
                return
            self._put(fd, memoryview(bytes(tail)))
            tail.clear()
        whole = len(view) - len(view) % BLOCK
        if whole:
            self._put(fd, view[:whole])
        if whole < len(view):
            tail += view[whole:]

    def _put(self, fd: int, blocks: memoryview) -> None:
        """Check whole data blocks against their digests, then write and hash them."""
        assert self.leaves is not None
        first = self.offset // BLOCK
        bad = self.leaves.first_mismatch(first, blocks)
        if bad is not None:
            # The blocks before it are good: keep them, synced and recorded so
            # the next attempt resumes at the bad one; it is not written at all.
            self._put(fd, blocks[: (bad - first) * BLOCK])
            self._sync(fd)
            t = self.target
            raise Refused(
                f"{t.path}: data block {bad} (byte {bad * BLOCK}) does not match the signed "
                f"dm-verity hash tree (tampered or corrupted); refused before writing it, "
                f"slot {self.slot} stays unbootable",
                hint="the server or something between it and the node altered the file",
            )
        self._pwrite(fd, blocks)
        self.hasher.update(blocks)
        self._advance(fd, len(blocks))

    def _write_tree(self, fd: int) -> None:
        """The verified tree after the data (unless a resumed install already has it)."""
        v = self.verity
        assert v is not None
        if self.offset != v.hash_offset:
            return
        self._pwrite(fd, self._tree)
        self.hasher.update(memoryview(self._tree))
        self._advance(fd, len(self._tree))

    # writing

    def _pwrite(self, fd: int, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        pos = self.offset
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n

    def _sync(self, fd: int, force: bool = False) -> None:
        if self.offset == self._synced and not force:
            return
        os.fsync(fd)
        self._synced = self.offset
        t = self.target
        if self.offset < t.length:
            self.store.save_progress(
                Progress(t.path, t.sha256, t.length, self.slot, str(self.device), self.offset)
            )

    def _read_back(self, fd: int) -> None:
        """Hash what the device holds now, not what the page cache remembers."""
        length = self.target.length
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, length, os.POSIX_FADV_DONTNEED)
        digest = hash_device(fd, length)
        if digest != self.target.sha256:
            self.store.clear_progress()
            raise Refused(
                f"slot {self.slot} ({self.device}) reads back a different SHA-256 than was "
                "written; the storage is failing",
                hint="check the disk (dmesg); the slot stays unbootable",
            )

    def _stop(self, state: RetryCallState) -> bool:
        # Give up after N failures without real progress. An attempt that got
        # at least a checkpoint further (a flaky but working link) starts the
        # count again; a server cut off for being too slow never does, or a
        # trickle would be retried forever.
        error = state.outcome.exception() if state.outcome is not None else None
        if self.offset - self._failed_at >= self.interval and not isinstance(error, TooSlow):
            self._failures = 0
        self._failed_at = max(self._failed_at, self.offset)
        self._failures += 1
        return self._failures >= max(1, self.retry.attempts) or state.attempt_number >= 10 * max(
            1, self.retry.attempts
        )

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "download attempt %d failed: %s; retrying from byte %d in %.1f s",
            state.attempt_number,
            error,
            self.offset,
            wait,
        )


def _retryable(error: BaseException) -> bool:
    return isinstance(error, TransferError) and error.retryable
