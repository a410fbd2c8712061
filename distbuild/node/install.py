"""Streaming a root image into the inactive slot: no temp copy, hash while writing.

The payload goes from the socket straight into the slot's block device (or a
file standing in for it), hashed on the way. Before the first byte the
server's answer is checked against the signed length (a server announcing
more, or a different file size, is refused); reading stops at the signed
length whatever the server sends. Every few MiB the device is synced and the
offset recorded on ``data`` (:class:`~distbuild.node.state.Progress`), so a
power cut costs at most that much again: the next attempt re-hashes what is
already in the slot and asks for the rest with an HTTP Range request.
Transient failures (connection lost, stall, 5xx) are retried with back-off by
tenacity, each attempt resuming where the last stopped.

Only when every byte is in, the SHA-256 matches the channel's metadata and a
read-back of the device (page cache dropped first) hashes the same, does the
caller make the slot bootable.
"""

from __future__ import annotations

import hashlib
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

from distbuild.errors import DistbuildError
from distbuild.node.channel import Refused, Target
from distbuild.node.http import CHUNK, Http, TooSlow, TransferError
from distbuild.node.state import Progress, StateStore

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


def hash_device(fd: int, length: int, hasher: hashlib._Hash | None = None) -> hashlib._Hash:
    """SHA-256 of the first ``length`` bytes of an open device (into ``hasher``)."""
    h = hasher or hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    offset = 0
    while offset < length:
        n = os.preadv(fd, [view[: min(CHUNK, length - offset)]], offset)
        if n <= 0:
            raise DistbuildError(f"the slot device ends at {offset} bytes, before {length}")
        h.update(view[:n])
        offset += n
    return h


class PayloadWriter:
    """Writes one target into one slot device, resumably."""

    def __init__(
        self,
        http: Http,
        store: StateStore,
        target: Target,
        slot: str,
        device: Path,
        retry: RetryPolicy | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.http = http
        self.store = store
        self.target = target
        self.slot = slot
        self.device = device
        self.retry = retry or RetryPolicy()
        self.on_progress = on_progress
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.interval = checkpoint_interval(target.length)
        self._synced = 0
        self.resumed_from = 0
        self._failures = 0  # failed attempts since the last one that made progress
        self._failed_at = 0

    def check_fits(self) -> None:
        """Refuse a payload larger than the slot, before anything is written."""
        size = device_size(self.device)
        if self.target.length > size:
            raise Refused(
                f"{self.target.path} is {self.target.length} bytes, larger than slot "
                f"{self.slot} ({self.device}, {size} bytes)",
                hint="the image outgrew the disk layout; reflash with a larger root partition",
            )

    def write(self) -> None:
        """Fetch, write, verify. Raises Refused (never retried) or TransferError."""
        self.check_fits()
        fd = os.open(self.device, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            self._resume(fd)
            for attempt in Retrying(
                stop=self._stop,
                wait=wait_random_exponential(multiplier=self.retry.wait, max=self.retry.wait_max),
                retry=retry_if_exception(_retryable),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    self._attempt(fd)
            self._sync(fd, force=True)
            digest = self.hasher.hexdigest()
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
        if not 0 < p.offset <= t.length:
            return
        # The bytes before the offset were synced before it was recorded;
        # hash them again from the device instead of fetching them again.
        hash_device(fd, p.offset, self.hasher)
        self.offset = self._synced = self.resumed_from = p.offset
        log.info("resuming %s at byte %d of %d", t.path, p.offset, t.length)

    def _attempt(self, fd: int) -> None:
        t = self.target
        if self.offset >= t.length:
            return
        body = self.http.open(t.url, start=self.offset)
        if self.offset and body.start != self.offset:
            # The server ignored the Range request (200): start over.
            log.info("%s: server ignored the range request; starting over", t.url)
            self.offset = self._synced = 0
            self.hasher = hashlib.sha256()
        want = t.length - self.offset
        if body.length is not None and body.length != want:
            body.close()
            more = "more" if body.length > want else "fewer"
            raise Refused(
                f"{t.url}: server announces {body.length} bytes from offset {body.start}, "
                f"{more} than the {want} the signed length ({t.length}) leaves; refused "
                "before writing",
                hint="the file on the server is not the one the channel signed",
            )
        if body.total is not None and body.total != t.length:
            body.close()
            raise Refused(
                f"{t.url}: the server's file is {body.total} bytes, not the signed {t.length}",
                hint="the file on the server is not the one the channel signed",
            )
        for chunk in self.http.chunks(body, want):
            self._pwrite(fd, chunk)
            self.hasher.update(chunk)
            self.offset += len(chunk)
            if self.offset - self._synced >= self.interval:
                self._sync(fd)
            if self.on_progress is not None:
                self.on_progress(self.offset, t.length)
        if self.offset < t.length:
            raise TransferError(f"{t.url}: connection closed at byte {self.offset} of {t.length}")
        if body.length is None and self.http.has_more(body):
            raise Refused(
                f"{t.url}: server sent more than the signed {t.length} bytes; cut off",
                hint="the file on the server is not the one the channel signed",
            )

    def _pwrite(self, fd: int, chunk: bytes) -> None:
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
        digest = hash_device(fd, length).hexdigest()
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
