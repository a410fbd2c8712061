"""Grow a GPT disk's last partition (``data``) to the end of its disk, power-cut safe.

A disk image is written onto a card of any size: its backup GPT then sits in
the middle of the card, and ``data`` ends where the image ended. :func:`grow`
moves the backup to the disk's last sector and extends ``data`` (which must
be the last partition) to the last 1 MiB boundary before it.

The primary table is the authority until the commit, and the kernel only
reads the backup where the primary says it is, so the writes go in this
order, each one synced before the next:

1. the new backup entries, then the new backup header, at the disk's end
   (beyond every partition: the old table still describes the disk);
2. the commit: ONE write of the primary header and the entry sectors up to
   the changed entry (1 KiB for the 4th entry, inside the disk's first 4 KiB),
   so the primary is either all old or all new;
3. the protective MBR's size field (the kernel only warns about it).

Nothing records progress but the disk itself: a re-run computes the wanted
table from the primary again and writes only what differs, so a cut after
any write is finished by the next run. Every table is checked (signature,
CRC32 of header and entries, sizes, bounds, overlaps) before anything is
written; a table it cannot trust is refused, never repaired.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from dataclasses import dataclass, replace

from distbuild.core.errors import DistbuildError

SECTOR = 512
ALIGN = 2048  # sectors: partitions end on 1 MiB boundaries, as the image's do
DATA_LABEL = "data"
# signature revision header_size header_crc reserved my_lba alternate_lba
# first_usable last_usable disk_guid entries_lba entry_count entry_size entries_crc
HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
SIGNATURE = b"EFI PART"
MAX_ENTRIES_BYTES = 1 << 20  # far beyond any real table (128 x 128 bytes = 16 KiB)


def tables_found(head: bytes, tail: bytes = b"") -> list[str]:
    """The partition tables a disk's first bytes and last sector show: ``MBR``, ``GPT``
    (at LBA 1 of 512- or 4096-byte sectors) and ``backup GPT``, in that order.

    ``head`` should hold the first 8 sectors (a 4 KiB-sector GPT header sits at
    4096); ``tail``, the disk's last 512 bytes, where a backup header would be.
    """
    found = []
    if head[510:512] == b"\x55\xaa" and any(head[446 + 16 * i + 4] for i in range(4)):
        found.append("MBR")
    if SIGNATURE in (head[SECTOR : SECTOR + 8], head[4096 : 4096 + 8]):
        found.append("GPT")
    if tail[:8] == SIGNATURE:
        found.append("backup GPT")
    return found


class GptError(DistbuildError):
    """A partition table this node will not touch."""


@dataclass(frozen=True)
class Header:
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int
    revision: int = 0x00010000

    def pack(self) -> bytes:
        def raw(crc: int) -> bytes:
            return HEADER.pack(
                SIGNATURE,
                self.revision,
                HEADER.size,
                crc,
                0,
                self.my_lba,
                self.alternate_lba,
                self.first_usable,
                self.last_usable,
                self.disk_guid,
                self.entries_lba,
                self.entry_count,
                self.entry_size,
                self.entries_crc,
            )

        return raw(zlib.crc32(raw(0))).ljust(SECTOR, b"\0")

    @property
    def entries_sectors(self) -> int:
        return -(-self.entry_count * self.entry_size // SECTOR)


@dataclass(frozen=True)
class Entry:
    index: int
    first: int
    last: int
    name: str


@dataclass(frozen=True)
class Table:
    header: Header
    entries: bytes  # the whole array, as on disk

    def used(self) -> list[Entry]:
        size = self.header.entry_size
        found = []
        for i in range(self.header.entry_count):
            raw = self.entries[i * size : (i + 1) * size]
            if raw[:16] == bytes(16):
                continue
            first, last = struct.unpack_from("<QQ", raw, 32)
            name = raw[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
            found.append(Entry(i, first, last, name))
        return found


class Disk:
    """A block device (or image file) read and written by sector, every write synced."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sectors = os.lseek(fd, 0, os.SEEK_END) // SECTOR

    def read(self, lba: int, count: int = 1) -> bytes:
        data = os.pread(self.fd, count * SECTOR, lba * SECTOR)
        if len(data) != count * SECTOR:
            raise GptError(f"cannot read sector {lba}: the disk ends first")
        return data

    def write(self, lba: int, data: bytes) -> None:
        os.pwrite(self.fd, data, lba * SECTOR)
        os.fsync(self.fd)


def _fail(what: str) -> GptError:
    return GptError(
        f"the partition table {what}",
        hint="this disk was not written from a distbuild disk image, or is damaged; "
        "the data partition keeps its size",
    )


def read_table(disk: Disk, lba: int) -> Table:
    """The GPT whose header is at ``lba``, checked from end to end."""
    raw = disk.read(lba)
    f = HEADER.unpack_from(raw)
    if f[0] != SIGNATURE:
        raise _fail(f"at sector {lba} has no GPT signature")
    if not HEADER.size <= f[2] <= SECTOR:
        raise _fail(f"at sector {lba} has a header size of {f[2]}")
    check = bytearray(raw[: f[2]])
    check[16:20] = bytes(4)
    if zlib.crc32(check) != f[3]:
        raise _fail(f"at sector {lba} fails its header CRC")
    h = Header(f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13], f[1])
    _check_header(h, lba, disk.sectors)
    entries = disk.read(h.entries_lba, h.entries_sectors)[: h.entry_count * h.entry_size]
    if zlib.crc32(entries) != h.entries_crc:
        raise _fail(f"at sector {lba} fails its entries CRC")
    table = Table(h, entries)
    _check_entries(table)
    return table


def _check_header(h: Header, lba: int, sectors: int) -> None:
    if h.my_lba != lba:
        raise _fail(f"at sector {lba} says it is at sector {h.my_lba}")
    if not 128 <= h.entry_size <= 4096 or h.entry_size % 128:
        raise _fail(f"has entries of {h.entry_size} bytes")
    if h.entry_count < 1 or h.entry_count * h.entry_size > MAX_ENTRIES_BYTES:
        raise _fail(f"has {h.entry_count} entries")
    if not 1 < h.first_usable <= h.last_usable < sectors - 1:
        raise _fail(f"has usable sectors {h.first_usable}..{h.last_usable} on a disk of {sectors}")
    end = h.entries_lba + h.entries_sectors
    if h.entries_lba < 2 or end > sectors or h.first_usable <= h.entries_lba < h.last_usable:
        raise _fail(f"has its entries at sector {h.entries_lba}")


def _check_entries(t: Table) -> None:
    spans = sorted((e.first, e.last) for e in t.used())
    for first, last in spans:
        if not t.header.first_usable <= first <= last <= t.header.last_usable:
            raise _fail(f"has a partition at sectors {first}..{last}, outside its usable space")
    for (_, last), (first, _) in itertools.pairwise(spans):
        if first <= last:
            raise _fail("has overlapping partitions")


def data_entry(t: Table) -> Entry:
    """The ``data`` partition, which must be the table's only one and end last."""
    used = t.used()
    named = [e for e in used if e.name == DATA_LABEL]
    if len(named) != 1:
        raise _fail(f"has {len(named)} partitions labelled {DATA_LABEL!r}, not one")
    if max(e.last for e in used) != named[0].last:
        raise _fail(f"has a partition after {DATA_LABEL!r}")
    return named[0]


@dataclass(frozen=True)
class Plan:
    """The table wanted on this disk, and where ``data`` is now and will be."""

    primary: Table
    backup: Table
    data: Entry
    new_last: int

    @property
    def grows(self) -> bool:
        return self.new_last > self.data.last


def plan(disk: Disk) -> Plan:
    """The grown table, from the primary (the authority until it is rewritten)."""
    old = read_table(disk, 1)
    data = data_entry(old)
    h = old.header
    if h.entries_lba != 2:
        raise _fail(f"keeps its entries at sector {h.entries_lba}, not right after its header")
    last_lba = disk.sectors - 1
    if h.alternate_lba > last_lba:
        raise _fail(f"ends at sector {h.alternate_lba}, beyond this disk's {last_lba}")
    backup_entries = last_lba - h.entries_sectors
    last_usable = backup_entries - 1
    if last_usable < data.last:
        raise _fail("leaves no room for its backup at the end of this disk")
    new_last = max(data.last, (last_usable + 1) // ALIGN * ALIGN - 1)
    entries = bytearray(old.entries)
    struct.pack_into("<Q", entries, data.index * h.entry_size + 40, new_last)
    crc = zlib.crc32(entries)
    primary = replace(h, alternate_lba=last_lba, last_usable=last_usable, entries_crc=crc)
    backup = replace(primary, my_lba=last_lba, alternate_lba=1, entries_lba=backup_entries)
    return Plan(Table(primary, bytes(entries)), Table(backup, bytes(entries)), data, new_last)


def _padded(entries: bytes, header: Header) -> bytes:
    return entries.ljust(header.entries_sectors * SECTOR, b"\0")


def _mbr(disk: Disk) -> bytes | None:
    """Sector 0 with its protective partition sized to this disk (None: nothing to change)."""
    mbr = bytearray(disk.read(0))
    if mbr[510:512] != b"\x55\xaa" or mbr[446 + 4] != 0xEE:
        return None
    size = min(disk.sectors - 1, 0xFFFFFFFF)
    if struct.unpack_from("<I", mbr, 446 + 12)[0] == size:
        return None
    struct.pack_into("<I", mbr, 446 + 12, size)
    return bytes(mbr)


def apply(disk: Disk, p: Plan) -> list[str]:
    """Write what differs from ``p``, in the power-cut safe order; the steps written."""
    done: list[str] = []
    b = p.backup.header
    if disk.read(b.entries_lba, b.entries_sectors) != _padded(p.backup.entries, b):
        disk.write(b.entries_lba, _padded(p.backup.entries, b))
        done.append("backup entries")
    if disk.read(b.my_lba) != b.pack():
        disk.write(b.my_lba, b.pack())
        done.append("backup header")
    h = p.primary.header
    # The commit: the header and the entry sectors up to the changed one, in one
    # write (the entries follow the header, checked by plan()).
    span = 2 + ((p.data.index + 1) * h.entry_size - 1) // SECTOR
    want = (h.pack() + _padded(p.primary.entries, h))[: span * SECTOR]
    if disk.read(1, span) != want:
        disk.write(1, want)
        done.append("primary table")
    if (mbr := _mbr(disk)) is not None:
        disk.write(0, mbr)
        done.append("protective MBR")
    return done


def grow(disk: Disk) -> tuple[Plan, list[str]]:
    """Grow ``data`` to the end of ``disk`` (a no-op once done); the plan and the writes."""
    p = plan(disk)
    return p, apply(disk, p)


__all__ = [
    "DATA_LABEL",
    "SECTOR",
    "Disk",
    "GptError",
    "Plan",
    "Table",
    "grow",
    "plan",
    "read_table",
]
