"""distbuild.core.bmap against real ``bmaptool create`` output, and crafted bmaps refused."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from distbuild.core import bmap
from distbuild.core.bmap import BmapError, MismatchError

BLOCK = 4096


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A sparse 4 MiB image with data at three places (one of them its partial last block)
    and its bmap from the real bmaptool."""
    if not shutil.which("bmaptool"):
        pytest.skip("needs bmap-tools")
    tmp = tmp_path_factory.mktemp("bmap")
    image = tmp / "disk.img"
    with image.open("wb") as f:
        f.truncate((4 << 20) + 1000)  # not a whole number of blocks
        for offset, size in ((0, 5000), (300 * BLOCK, 3 * BLOCK), ((4 << 20) + 10, 990)):
            f.seek(offset)
            f.write(os.urandom(size))
    text = subprocess.run(
        ["bmaptool", "create", str(image)], check=True, capture_output=True
    ).stdout
    return image, text


def test_parses_bmaptool_output(made: tuple[Path, bytes]) -> None:
    image, text = made
    m = bmap.parse(text)
    assert m.image_size == image.stat().st_size and m.block_size == BLOCK
    assert [(e.offset, e.length) for e in m.extents] == [
        (0, 2 * BLOCK),
        (300 * BLOCK, 3 * BLOCK),
        (1024 * BLOCK, 1000),  # the last block is as long as the image
    ]
    data = image.read_bytes()
    for e in m.extents:
        assert hashlib.sha256(data[e.offset : e.offset + e.length]).hexdigest() == e.sha256


class Counting(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.offsets: list[int] = []

    def write(self, b: object) -> int:
        self.offsets.append(self.tell())
        return super().write(b)  # type: ignore[arg-type]


def test_write_skips_holes_and_verify_reads_back(made: tuple[Path, bytes]) -> None:
    image, text = made
    m = bmap.parse(text)
    size = image.stat().st_size
    dest = Counting(b"\xaa" * size)  # a card that held data before
    seen: list[int] = []
    with image.open("rb") as src:
        stats = bmap.write(m, src, dest, seen.append)
    assert stats.bytes_written == m.mapped_bytes == sum(seen) == 2 * BLOCK + 3 * BLOCK + 1000
    assert stats.writes == len(dest.offsets) == 3 and stats.extents == 3
    out, data = dest.getvalue(), image.read_bytes()
    for e in m.extents:
        assert out[e.offset : e.offset + e.length] == data[e.offset : e.offset + e.length]
    assert out[2 * BLOCK : 300 * BLOCK] == b"\xaa" * (298 * BLOCK)  # a hole keeps old bytes
    bmap.verify(m, dest)
    flipped = bytearray(out)
    flipped[301 * BLOCK + 7] ^= 1
    with pytest.raises(MismatchError, match=f"at {300 * BLOCK}-"):
        bmap.verify(m, io.BytesIO(bytes(flipped)))


def test_write_from_a_stream_that_cannot_seek(made: tuple[Path, bytes]) -> None:
    image, text = made
    m = bmap.parse(text)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(image.read_bytes())

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            data = self.inner.read(len(b))
            b[: len(data)] = data
            return len(data)

    dest = io.BytesIO(bytes(image.stat().st_size))
    bmap.write(m, io.BufferedReader(Pipe()), dest)
    assert dest.getvalue() == image.read_bytes()


def test_an_image_that_is_not_the_bmaps_is_refused(made: tuple[Path, bytes]) -> None:
    image, text = made
    m = bmap.parse(text)
    data = bytearray(image.read_bytes())
    data[300 * BLOCK] ^= 0xFF
    with pytest.raises(MismatchError, match="do not match its bmap"):
        bmap.check_image(m, io.BytesIO(bytes(data)))
    dest = io.BytesIO(bytes(len(data)))
    with pytest.raises(MismatchError) as err:
        bmap.write(m, io.BytesIO(bytes(data)), dest)
    assert err.value.written == m.mapped_bytes - 1000  # reported as a partial write
    with pytest.raises(MismatchError, match="bytes, its bmap says"):
        bmap.check_image(m, io.BytesIO(bytes(data[:-1])))
    with pytest.raises(MismatchError, match="ends at byte"):
        bmap.write(m, io.BytesIO(bytes(data[: 301 * BLOCK])), io.BytesIO())


def _resign(text: bytes) -> bytes:
    """A crafted bmap with a correct file checksum, so each check below is the one that fires."""
    old = re.search(rb"<BmapFileChecksum> *([0-9a-f]{64})", text)
    assert old
    zeroed = text.replace(old.group(1), b"0" * 64)
    return zeroed.replace(b"0" * 64, hashlib.sha256(zeroed).hexdigest().encode(), 1)


def _edit(text: bytes, old: bytes, new: bytes) -> bytes:
    assert old in text
    return _resign(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b'version="2.0"', b'version="1.4"', "format version"),
        (b"<ChecksumType> sha256", b"<ChecksumType> sha1", "ChecksumType"),
        (b"<BlockSize> 4096", b"<BlockSize> 4095", "power of two"),
        (b"<BlocksCount> 1025", b"<BlocksCount> 9", "BlocksCount"),
        (b"<MappedBlocksCount> 6", b"<MappedBlocksCount> 7", "MappedBlocksCount"),
        (b"> 1024 </Range>", b"> 1024-1025 </Range>", "past the image"),
        (b"> 300-302 </Range>", b"> 1-302 </Range>", "overlaps or is out of order"),
        (b"> 300-302 </Range>", b"> 302-300 </Range>", "overlaps or is out of order"),
        (b"> 300-302 </Range>", b"> 300-x </Range>", "FIRST"),
        (b"<ImageSize> ", b"<ImageSize> -", "ImageSize"),
    ],
)
def test_crafted_bmaps_are_refused(
    made: tuple[Path, bytes], old: bytes, new: bytes, message: str
) -> None:
    text = made[1]
    with pytest.raises(BmapError, match=message):
        bmap.parse(_edit(text, old, new))


def test_a_bmap_edited_without_its_checksum_is_refused(made: tuple[Path, bytes]) -> None:
    text = made[1].replace(b"> 300-302 </Range>", b"> 300-303 </Range>")
    with pytest.raises(BmapError, match="BmapFileChecksum"):
        bmap.parse(text)


def test_ranges_out_of_order_are_refused(made: tuple[Path, bytes]) -> None:
    text = made[1]
    ranges = re.findall(rb"<Range [^\n]*</Range>", text)
    swapped = text.replace(ranges[0], b"@@").replace(ranges[1], ranges[0]).replace(b"@@", ranges[1])
    with pytest.raises(BmapError, match="out of order"):
        bmap.parse(_resign(swapped))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE bmap [<!ENTITY a "aaaa">]><bmap/>', "DOCTYPE"),
        (b'<!DOCTYPE bmap SYSTEM "file:///etc/passwd"><bmap version="2.0"/>', "DOCTYPE"),
        (b'<bmap version="2.0"><ImageSize>&a;</ImageSize></bmap>', "not well-formed"),
        (b"<other/>", "root element"),
        (b'<bmap version="2.0"><ImageSize>1', "not well-formed"),
        (b"<bmap>" + b"<x>" * 20, "too deeply"),
        (b" " * (bmap.MAX_BMAP_BYTES + 1), "larger than"),
    ],
)
def test_hostile_xml_is_refused(doc: bytes, message: str) -> None:
    with pytest.raises(BmapError, match=message) as err:
        bmap.parse(doc)
    assert err.value.hint


def test_a_range_without_a_checksum_is_refused(made: tuple[Path, bytes]) -> None:
    text = re.sub(rb' chksum="[0-9a-f]{64}"> 300', b"> 300", made[1], count=1)
    with pytest.raises(BmapError, match="no sha256"):
        bmap.parse(_resign(text))


def test_load_reads_a_bounded_file(made: tuple[Path, bytes], tmp_path: Path) -> None:
    path = tmp_path / "x.bmap"
    path.write_bytes(made[1])
    assert bmap.load(path) == bmap.parse(made[1])
    with pytest.raises(BmapError, match="cannot read"):
        bmap.load(tmp_path / "missing.bmap")
