"""Fetch a disk image's mapped ranges, verify them, and write them power-cut safe.

The image's bmap is a signed target (fetched and checked against its TUF
length and sha256 first); every range in it carries a sha256, so the mapped
bytes, fetched with HTTP Range requests into a sparse staging file in RAM
(tmpfs), are checked against the signed bmap before a byte goes to the disk.
Holes are neither fetched nor written (bmap semantics).

The write keeps the disk unbootable until everything else is on it and read
back: the *held* blocks (the image's first block: protective MBR and primary
GPT header; the boot partition's first block: its FAT boot sector and the
FAT32 backup; the image's last block: the backup GPT header) are written as
zeros first, then every other mapped block, then all is synced and read back,
and only then the held blocks: the boot partition's, the primary table (the
commit: every other byte is on the disk and verified), the backup header,
each synced. A power cut before the commit leaves a disk with no partition
table, which no firmware boots and which the next network boot installs
again (a backup GPT alone at the disk's end would make it refuse the disk as
partitioned, hence the backup after the primary; a cut between the two leaves
a complete disk whose backup header the node's grow-data rewrites on boot).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from distbuild.core import bmap
from distbuild.node import gpt
from distbuild.node.http import Http, TransferError
from distbuild.node.tufclient import Refused, Target

CHUNK = 1 << 20
BOOT_LABELS = ("esp", "boot")
# Called with the bytes of the image written so far and the total to write.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Span:
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass
class Fetched:
    """A verified image in a staging file: its bmap, the held spans, the bytes fetched."""

    bmap: bmap.Bmap
    staging: Path
    held: list[Span] = field(default_factory=list)
    received: int = 0


def fetch_bmap(http: Http, target: Target) -> bmap.Bmap:
    """The bmap target, checked against its signed length and sha256, then parsed."""
    if target.length > bmap.MAX_BMAP_BYTES:
        raise Refused(f"{target.path}: a bmap of {target.length} bytes is too large")
    data = http.get(target.url, target.length)
    if len(data) != target.length or hashlib.sha256(data).hexdigest() != target.sha256:
        raise Refused(
            f"{target.path}: the server's bmap is not the one the channel signed",
            hint="the server or something between it and this machine altered it",
        )
    return bmap.parse(data)


def _range(http: Http, target: Target, extent: bmap.Extent) -> Iterator[bytes]:
    """One extent's bytes from the server (a server ignoring Range: read up to it)."""
    end = extent.offset + extent.length
    body = http.open(target.url, start=extent.offset, end=end, expect=extent.length)
    skip = 0 if body.response.status == 206 else extent.offset
    if body.response.status == 206 and body.start != extent.offset:
        body.close()
        raise TransferError(f"{target.url}: the server sent another range", retryable=False)
    want = extent.length
    for chunk in http.chunks(body, skip + extent.length):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        piece = chunk[skip:]
        skip = 0
        want -= len(piece)
        yield piece
    if want:
        raise TransferError(f"{target.url}: the server's file ended inside a mapped range")


def _retrying(http: Http) -> Retrying:
    """A transfer that failed (not a refusal) is tried again with back-off, as the updater does."""
    limits = http.limits
    return Retrying(
        stop=stop_after_attempt(max(1, limits.tries)),
        wait=wait_random_exponential(multiplier=limits.retry_wait, max=limits.retry_wait_max),
        retry=retry_if_exception(lambda e: isinstance(e, TransferError) and e.retryable),
        reraise=True,
    )


def _fetch_extent(http: Http, target: Target, extent: bmap.Extent, out: BinaryIO) -> None:
    """One extent into ``out`` at its offset, refused unless it hashes as the signed bmap says."""
    digest = hashlib.sha256()
    out.seek(extent.offset)
    for piece in _range(http, target, extent):
        digest.update(piece)
        out.write(piece)
    if digest.hexdigest() != extent.sha256:
        raise Refused(
            f"{target.path}: the bytes at {extent.offset} are not the signed ones "
            "(their sha256 differs from the channel's bmap); nothing was written",
            hint="the image on the server was altered or damaged",
        )


def fetch_image(http: Http, target: Target, bm: bmap.Bmap, staging: Path) -> Fetched:
    """The mapped ranges of ``target`` into ``staging``, each checked against the signed bmap."""
    if bm.image_size != target.length:
        raise Refused(
            f"{target.path}: the channel signs {target.length} bytes, its bmap describes "
            f"{bm.image_size}; they do not belong together",
            hint="republish the build (its disk.img and disk.img.bmap)",
        )
    before = http.received
    with staging.open("wb") as out:
        out.truncate(bm.image_size)
        for extent in bm.extents:
            for attempt in _retrying(http):
                with attempt:
                    _fetch_extent(http, target, extent, out)
    fetched = Fetched(bm, staging, received=http.received - before)
    fetched.held = held_spans(staging, bm)
    return fetched


def held_spans(staging: Path, bm: bmap.Bmap) -> list[Span]:
    """The blocks written last, in the order they are written: boot, primary table, backup."""
    block = bm.block_size
    spans = [Span(0, min(block, bm.image_size))]
    with staging.open("rb") as f:
        disk = gpt.Disk(f.fileno())
        try:
            table = gpt.read_table(disk, 1)
        except gpt.GptError as e:
            raise Refused(f"the signed image has no valid GPT: {e.message}") from None
    boot = [e for e in table.used() if e.name in BOOT_LABELS]
    if len(boot) != 1:
        raise Refused(f"the signed image has {len(boot)} boot partitions (esp/boot), not one")
    start = boot[0].first * gpt.SECTOR
    spans.insert(0, Span(start, min(block, (boot[0].last + 1) * gpt.SECTOR - start)))
    backup = table.header.alternate_lba * gpt.SECTOR
    if backup >= block and not any(s.offset <= backup < s.end for s in spans):
        first = backup // block * block
        spans.append(Span(first, min(block, bm.image_size - first)))
    return spans


def _pieces(bm: bmap.Bmap, held: list[Span]) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, held) pieces of every extent, at most :data:`CHUNK` long."""
    cuts = sorted({c for s in held for c in (s.offset, s.end)})
    for extent in bm.extents:
        pos, end = extent.offset, extent.offset + extent.length
        while pos < end:
            nxt = min([end, pos + CHUNK, *[c for c in cuts if c > pos]])
            yield pos, nxt - pos, any(s.offset <= pos < s.end for s in held)
            pos = nxt


def _sync(dest: BinaryIO) -> None:
    dest.flush()
    os.fsync(dest.fileno())


def write_image(fetched: Fetched, dest: BinaryIO, progress: Progress | None = None) -> None:
    """Write the verified image to ``dest``: held blocks zeroed, the rest, read-back, held last."""
    bm, held = fetched.bmap, fetched.held
    for span in held:
        dest.seek(span.offset)
        dest.write(bytes(span.length))
    _sync(dest)
    done = 0
    with fetched.staging.open("rb") as src:
        for offset, length, is_held in _pieces(bm, held):
            if not is_held:
                src.seek(offset)
                dest.seek(offset)
                dest.write(src.read(length))
            done += length
            if progress:
                progress(done, bm.mapped_bytes)
        bmap.sync(dest)
        _read_back(bm, held, src, dest)
        for span in held:
            src.seek(span.offset)
            dest.seek(span.offset)
            dest.write(src.read(span.length))
            _sync(dest)
    bmap.sync(dest)
    bmap.verify(bm, dest)


def _read_back(bm: bmap.Bmap, held: list[Span], src: BinaryIO, dest: BinaryIO) -> None:
    """Every written piece reads back as the image's bytes, every held one as zeros."""
    for offset, length, is_held in _pieces(bm, held):
        dest.seek(offset)
        got = dest.read(length)
        if is_held:
            want = bytes(length)
        else:
            src.seek(offset)
            want = src.read(length)
        if got != want:
            raise bmap.MismatchError(
                f"the disk's bytes at {offset} do not read back as written",
                "the disk may be failing: try another one",
                offset,
                bm.mapped_bytes,
            )


def wipe(dest: BinaryIO, size: int) -> None:
    """Zero the disk's first and last MiB: its old partition tables (install_wipe=1)."""
    mib = min(1 << 20, size)
    for offset in sorted({0, size - mib}):
        dest.seek(offset)
        dest.write(bytes(mib))
    _sync(dest)


def open_disk(device: Path) -> BinaryIO:
    """The target disk, read-write, unbuffered (every write reaches the device's cache)."""
    return io.FileIO(device, "r+")
