"""Append sections to a PE32+ image (x86_64 and aarch64 EFI stubs), standard library only.

A unified kernel image is systemd's EFI stub with extra sections (``.osrel``,
``.cmdline``, ``.initrd``, ``.linux``) that the stub finds by name. This
writes them the way ukify does, without pefile: each new section header goes
into the header area's free room, its data at the end of the file (padded to
``FileAlignment``), its address after the last section (rounded up to
``SectionAlignment``); ``SizeOfImage``, ``SizeOfInitializedData``,
``NumberOfSections`` and the checksum are brought up to date. The same inputs
give the same bytes.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass

from distbuild.core.errors import DistbuildError

MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64"}
PE32_PLUS = 0x20B
_COFF = struct.Struct(
    "<4sHHIIIHH"
)  # signature, machine, sections, time, symtab, nsyms, opt size, flags
_SECTION = struct.Struct("<8sIIIIIIHHI")
# Offsets into the optional header (PE32+).
_INIT_DATA, _SECT_ALIGN, _FILE_ALIGN, _IMAGE_SIZE, _HEADER_SIZE, _CHECKSUM = 8, 32, 36, 56, 60, 64
_RVA_COUNT, _DIRECTORIES = 108, 112
_SECURITY_DIR = 4
# IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
DATA_READ = 0x40000040


@dataclass(frozen=True)
class Section:
    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int
    flags: int


@dataclass(frozen=True)
class Headers:
    machine: str
    coff: int  # offset of the COFF header ("PE\0\0")
    optional: int  # offset of the optional header
    table: int  # offset of the section table
    section_alignment: int
    file_alignment: int
    size_of_headers: int
    sections: tuple[Section, ...]


def _bad(why: str) -> DistbuildError:
    return DistbuildError(
        f"the EFI stub is not a PE32+ image distbuild can extend: {why}",
        hint="check the boot lock's systemd-boot-efi package",
    )


def read_headers(data: bytes) -> Headers:
    """The PE32+ headers and section table of ``data``, checked for what appending needs."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        raise _bad("no MZ header")
    coff = struct.unpack_from("<I", data, 0x3C)[0]
    if coff + _COFF.size > len(data):
        raise _bad("the PE header lies outside the file")
    sig, machine, count, _, _, _, opt_size, _ = _COFF.unpack_from(data, coff)
    if sig != b"PE\0\0" or machine not in MACHINES:
        raise _bad(f"signature {sig!r}, machine {machine:#x}")
    optional = coff + _COFF.size
    if (
        optional + _DIRECTORIES > len(data)
        or struct.unpack_from("<H", data, optional)[0] != PE32_PLUS
    ):
        raise _bad("no PE32+ optional header")
    sect_align, file_align = struct.unpack_from("<II", data, optional + _SECT_ALIGN)
    header_size = struct.unpack_from("<I", data, optional + _HEADER_SIZE)[0]
    rvas = struct.unpack_from("<I", data, optional + _RVA_COUNT)[0]
    if rvas > _SECURITY_DIR and struct.unpack_from(
        "<II", data, optional + _DIRECTORIES + 8 * _SECURITY_DIR
    ) != (0, 0):
        raise _bad("it is signed (a certificate table would end up inside the new sections)")
    if not (_power_of_two(sect_align) and _power_of_two(file_align)):
        raise _bad(f"alignments {sect_align:#x}/{file_align:#x}")
    table = optional + opt_size
    if table + count * _SECTION.size > min(header_size, len(data)):
        raise _bad("the section table lies outside the headers")
    sections = []
    for i in range(count):
        name, vsize, vaddr, rsize, roff, _, _, _, _, flags = _SECTION.unpack_from(
            data, table + i * _SECTION.size
        )
        sections.append(
            Section(name.rstrip(b"\0").decode("ascii", "replace"), vsize, vaddr, rsize, roff, flags)
        )
    return Headers(
        MACHINES[machine],
        coff,
        optional,
        table,
        sect_align,
        file_align,
        header_size,
        tuple(sections),
    )


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def add_sections(image: bytes, new: list[tuple[str, bytes]]) -> bytes:
    """``image`` with ``new`` (name, contents) appended as initialized, read-only data sections."""
    h = read_headers(image)
    first_raw = min((s.raw_offset for s in h.sections if s.raw_size), default=h.size_of_headers)
    table_end = h.table + (len(h.sections) + len(new)) * _SECTION.size
    if table_end > min(h.size_of_headers, first_raw):
        raise _bad(f"no room in its headers for {len(new)} more section headers")
    taken = {s.name for s in h.sections}
    out = bytearray(image)
    vaddr = _align(max(s.virtual_address + s.virtual_size for s in h.sections), h.section_alignment)
    added = 0
    for i, (name, contents) in enumerate(new):
        encoded = name.encode("ascii")
        if len(encoded) > 8 or name in taken:
            raise DistbuildError(f"cannot add PE section {name!r}: too long or already present")
        taken.add(name)
        out += b"\0" * (_align(len(out), h.file_alignment) - len(out))
        raw_size = _align(len(contents), h.file_alignment)
        header = _SECTION.pack(
            encoded, len(contents), vaddr, raw_size, len(out), 0, 0, 0, 0, DATA_READ
        )
        slot = h.table + (len(h.sections) + i) * _SECTION.size
        out[slot : slot + _SECTION.size] = header
        out += contents + b"\0" * (raw_size - len(contents))
        vaddr = _align(vaddr + len(contents), h.section_alignment)
        added += raw_size
    struct.pack_into("<H", out, h.coff + 6, len(h.sections) + len(new))
    init = struct.unpack_from("<I", out, h.optional + _INIT_DATA)[0]
    struct.pack_into("<I", out, h.optional + _INIT_DATA, (init + added) & 0xFFFFFFFF)
    if vaddr > 0xFFFFFFFF:
        raise DistbuildError("the unified kernel image would exceed 4 GiB")
    struct.pack_into("<I", out, h.optional + _IMAGE_SIZE, vaddr)
    struct.pack_into(
        "<I", out, h.optional + _CHECKSUM, checksum(bytes(out), h.optional + _CHECKSUM)
    )
    return bytes(out)


def checksum(data: bytes, field: int) -> int:
    """The PE image checksum (imagehlp's CheckSumMappedFile), skipping the field at ``field``."""
    words = array.array("H", data + b"\0" * (len(data) % 2))
    if sys.byteorder == "big":
        words.byteswap()
    skip = field // 2
    total = sum(words[:skip]) + sum(words[skip + 2 :])
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF
