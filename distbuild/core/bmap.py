"""Block maps (bmaptool's ``.bmap``, format 2.x): parse, write the mapped ranges, verify them.

A disk image is mostly holes; its bmap lists the block ranges that hold data,
each with a sha256. Writing a card then means writing those ranges only and
reading every one of them back against its hash.

Holes are skipped, not zeroed, exactly as ``bmaptool copy`` does: on a device
that held data before, a hole keeps the device's old bytes. That is safe for
our images because nothing in them reads a hole (a filesystem reads only the
blocks it allocated, and those are mapped); what the old bytes may hold is
visible to whoever reads the raw device, so wipe a card first if that matters.

A bmap is hostile input (it may come from a server): it is parsed without a
DTD or entities, its size is bounded, and every range must lie inside the
image, sorted and without overlap, before a byte is written. Stdlib only: the
node's network installer uses this module too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat

from distbuild.core.errors import DistbuildError

MAX_BMAP_BYTES = 8 << 20  # a bmap of a fragmented 64 GiB image is a few MiB
MAX_RANGES = 1 << 18
CHUNK = 1 << 20
_MAX_INT = 1 << 62
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"([0-9]{1,19})(?:-([0-9]{1,19}))?")

# Called with the number of bytes just written or verified.
ProgressFn = Callable[[int], None]


class BmapError(DistbuildError):
    """A bmap file is malformed, unsupported or crafted."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            message, hint or "use the .bmap made with the image ('bmaptool create', format 2.x)"
        )


class MismatchError(DistbuildError):
    """Data did not match its bmap hash: the image when ``written`` is false, the target else."""

    def __init__(self, message: str, hint: str, offset: int, written: int) -> None:
        super().__init__(message, hint)
        self.offset = offset
        self.written = written  # bytes already written to the target


@dataclass(frozen=True)
class Extent:
    """A mapped byte range of the image, with the sha256 of its bytes."""

    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class Bmap:
    image_size: int
    block_size: int
    extents: tuple[Extent, ...]

    @property
    def mapped_bytes(self) -> int:
        return sum(e.length for e in self.extents)


@dataclass
class Stats:
    """What a write did: ``writes`` counts write calls, so holes skipped are visible."""

    writes: int = 0
    bytes_written: int = 0
    extents: int = 0
    bytes_verified: int = 0


# --- parsing ---------------------------------------------------------------------------------

_FIELDS = ("ImageSize", "BlockSize", "BlocksCount", "MappedBlocksCount", "ChecksumType")


class _Reader:
    """An expat handler that keeps the few elements of a bmap and refuses DTDs and entities."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.ranges: list[tuple[str, str]] = []  # (text, chksum)
        self.version = ""
        self.file_checksum = ""
        self._path: list[str] = []
        self._text: list[str] = []
        self._chksum = ""

    def parse(self, data: bytes) -> None:
        parser = expat.ParserCreate()
        parser.StartDoctypeDeclHandler = self._refuse_dtd
        parser.EntityDeclHandler = self._refuse_entity
        parser.ExternalEntityRefHandler = self._refuse_entity
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text.append
        try:
            parser.Parse(data, True)
        except expat.ExpatError as e:
            raise BmapError(f"the bmap is not well-formed XML: {e}") from None

    def _refuse_dtd(self, *_: object) -> None:
        raise BmapError("the bmap has a DOCTYPE: refused (a bmap needs none)")

    def _refuse_entity(self, *_: object) -> int:
        raise BmapError("the bmap declares or references an entity: refused")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if len(self._path) > 8:
            raise BmapError("the bmap nests elements too deeply")
        if not self._path:
            if name != "bmap":
                raise BmapError(f"the bmap's root element is <{name}>, not <bmap>")
            self.version = attrs.get("version", "")
        self._path.append(name)
        self._text.clear()
        self._chksum = attrs.get("chksum", "")

    def _end(self, name: str) -> None:
        text = "".join(self._text).strip()
        self._text.clear()
        where = "/".join(self._path)
        self._path.pop()
        if where == "bmap/BlockMap/Range":
            if len(self.ranges) >= MAX_RANGES:
                raise BmapError(f"the bmap lists more than {MAX_RANGES} ranges")
            self.ranges.append((text, self._chksum))
        elif where == "bmap/BmapFileChecksum":
            self.file_checksum = text
        elif len(self._path) == 1 and name in _FIELDS:
            if name in self.fields:
                raise BmapError(f"the bmap has <{name}> twice")
            self.fields[name] = text


def _number(reader: _Reader, name: str, low: int = 1) -> int:
    text = reader.fields.get(name)
    if text is None:
        raise BmapError(f"the bmap has no <{name}>")
    if (
        not text.isdigit()
        or not text.isascii()
        or len(text) > 19
        or not low <= int(text) < _MAX_INT
    ):
        raise BmapError(f"the bmap's <{name}> is not a number of at least {low}: {text[:40]!r}")
    return int(text)


def _check_file_checksum(data: bytes, digest: str) -> None:
    """bmaptool's own checksum: the file's sha256 with this field's value set to zeros."""
    if not _SHA256.fullmatch(digest):
        raise BmapError("the bmap's <BmapFileChecksum> is not a sha256")
    zeroed = data.replace(digest.encode(), b"0" * 64)  # as bmaptool: every occurrence
    if hashlib.sha256(zeroed).hexdigest() != digest:
        raise BmapError("the bmap does not match its own <BmapFileChecksum>: damaged or edited")


def _extents(reader: _Reader, image_size: int, block_size: int) -> Iterator[Extent]:
    blocks = -(-image_size // block_size)
    after = 0  # the first block the next range may start at
    for text, chksum in reader.ranges:
        m = _RANGE.fullmatch(text)
        if not m:
            raise BmapError(f"the bmap has a range that is not FIRST[-LAST]: {text[:40]!r}")
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if first < after or last < first:
            raise BmapError(f"the bmap's range {text} overlaps or is out of order")
        if last >= blocks:
            raise BmapError(f"the bmap's range {text} lies past the image's {blocks} blocks")
        if not _SHA256.fullmatch(chksum):
            raise BmapError(f"the bmap's range {text} has no sha256 chksum")
        offset = first * block_size
        yield Extent(offset, min((last + 1) * block_size, image_size) - offset, chksum)
        after = last + 1


def parse(data: bytes) -> Bmap:
    """A bmap from its bytes; raises :class:`BmapError` on anything not a sound 2.x sha256 bmap."""
    if len(data) > MAX_BMAP_BYTES:
        raise BmapError(f"the bmap is larger than {MAX_BMAP_BYTES} bytes")
    reader = _Reader()
    reader.parse(data)
    major = reader.version.split(".")[0]
    if major != "2":
        raise BmapError(f"unsupported bmap format version {reader.version[:20]!r} (need 2.x)")
    if reader.fields.get("ChecksumType") != "sha256":
        raise BmapError("the bmap's <ChecksumType> is not sha256")
    _check_file_checksum(data, reader.file_checksum)
    image_size = _number(reader, "ImageSize")
    block_size = _number(reader, "BlockSize", 512)
    if block_size & (block_size - 1) or block_size > 1 << 24:
        raise BmapError(f"the bmap's block size {block_size} is not a power of two up to 16 MiB")
    if _number(reader, "BlocksCount") != -(-image_size // block_size):
        raise BmapError("the bmap's <BlocksCount> does not match its image and block size")
    extents = tuple(_extents(reader, image_size, block_size))
    mapped = sum(-(-e.length // block_size) for e in extents)
    if _number(reader, "MappedBlocksCount", 0) != mapped:
        raise BmapError("the bmap's <MappedBlocksCount> does not match its ranges")
    return Bmap(image_size, block_size, extents)


def load(path: Path) -> Bmap:
    """Read and parse a bmap file, reading at most :data:`MAX_BMAP_BYTES` + 1 bytes."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BMAP_BYTES + 1)
    except OSError as e:
        raise BmapError(f"cannot read the bmap {path}: {e.strerror}") from None
    return parse(data)


# --- writing and verifying -------------------------------------------------------------------


def _chunks(length: int) -> Iterator[int]:
    while length > 0:
        n = min(CHUNK, length)
        yield n
        length -= n


def _skip(src: BinaryIO, pos: int, offset: int) -> None:
    """Move a source to ``offset``: seek when it can, else read over the hole."""
    if src.seekable():
        src.seek(offset)
        return
    for n in _chunks(offset - pos):
        if len(src.read(n)) != n:
            raise MismatchError(
                "the image ends before its bmap's last range", "", offset, written=0
            )


def _read_exact(src: BinaryIO, n: int, offset: int, stats: Stats) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise MismatchError(
            f"the image ends at byte {offset + len(data)}, before its bmap's ranges do",
            "the image and its bmap do not belong together: fetch both again",
            offset,
            stats.bytes_written,
        )
    return data


def write(bmap: Bmap, src: BinaryIO, dest: BinaryIO, progress: ProgressFn | None = None) -> Stats:
    """Write the mapped extents of ``src`` to the same offsets of ``dest``; holes are skipped.

    Each extent's bytes are hashed as they pass; an extent that does not match
    its bmap hash stops the write with :class:`MismatchError` (the target then
    holds the extents before it). ``dest`` is not synced here: see :func:`copy`.
    """
    stats = Stats()
    pos = 0
    for extent in bmap.extents:
        if extent.offset != pos:
            _skip(src, pos, extent.offset)
        dest.seek(extent.offset)
        digest = hashlib.sha256()
        for n in _chunks(extent.length):
            data = _read_exact(src, n, extent.offset, stats)
            digest.update(data)
            dest.write(data)
            stats.writes += 1
            stats.bytes_written += n
            if progress:
                progress(n)
        pos = extent.offset + extent.length
        if digest.hexdigest() != extent.sha256:
            raise MismatchError(
                f"the image's bytes at {extent.offset} do not match its bmap",
                "the image and its bmap do not belong together: fetch both again",
                extent.offset,
                stats.bytes_written,
            )
        stats.extents += 1
    dest.flush()
    return stats


def sync(dest: BinaryIO) -> None:
    """Flush ``dest`` to the medium and drop its cached pages, so a read-back reads the medium."""
    dest.flush()
    os.fsync(dest.fileno())
    # Where fadvise is refused (some file systems), the read-back may come from the cache.
    with contextlib.suppress(OSError):
        os.posix_fadvise(dest.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def verify(
    bmap: Bmap, dest: BinaryIO, progress: ProgressFn | None = None, stats: Stats | None = None
) -> None:
    """Read every mapped extent back from ``dest`` and check it against its bmap hash."""
    for extent in bmap.extents:
        dest.seek(extent.offset)
        digest = hashlib.sha256()
        for n in _chunks(extent.length):
            data = dest.read(n)
            digest.update(data)
            if stats is not None:
                stats.bytes_verified += len(data)
            if progress:
                progress(n)
        if digest.hexdigest() != extent.sha256:
            end = extent.offset + extent.length
            raise MismatchError(
                f"the bytes written at {extent.offset}-{end} do not read back as written",
                "the card may be failing or fake: try another one",
                extent.offset,
                bmap.mapped_bytes,
            )


def copy(
    bmap: Bmap,
    src: BinaryIO,
    dest: BinaryIO,
    progress: ProgressFn | None = None,
    after_sync: Callable[[], None] | None = None,
) -> Stats:
    """Write, sync, then read every extent back: the whole of a bmap write.

    ``after_sync`` runs between the sync and the read-back (tests damage the
    medium there, to prove the read-back reads the medium).
    """
    stats = write(bmap, src, dest, progress)
    sync(dest)
    if after_sync is not None:
        after_sync()
    verify(bmap, dest, progress, stats)
    return stats


def check_image(bmap: Bmap, src: BinaryIO) -> None:
    """Check an image file against its bmap before a byte goes anywhere: size and every extent."""
    size = src.seek(0, os.SEEK_END)
    if size != bmap.image_size:
        raise MismatchError(
            f"the image has {size} bytes, its bmap says {bmap.image_size}",
            "the image and its bmap do not belong together: fetch both again",
            0,
            0,
        )
    try:
        verify(bmap, src)
    except MismatchError as e:
        raise MismatchError(
            f"the image's bytes at {e.offset} do not match its bmap",
            "the image and its bmap do not belong together: fetch both again",
            e.offset,
            0,
        ) from None
