"""Reading .deb files without dpkg: ar members, control fields, data tar."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from distbuild.core.errors import DistbuildError


@dataclass(frozen=True)
class Member:
    name: str
    offset: int
    size: int


def members(f: BinaryIO, path: Path) -> dict[str, Member]:
    f.seek(0)
    if f.read(8) != b"!<arch>\n":
        raise DistbuildError(f"{path}: not a Debian package (no ar header)")
    out = {}
    while True:
        header = f.read(60)
        if len(header) < 60:
            break
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = Member(name, f.tell(), size)
        f.seek(size + (size & 1), io.SEEK_CUR)
    return out


class _Slice(io.RawIOBase):
    """A read-only window onto part of a file."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self.f, self.offset, self.size, self.pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _decompress(name: str, raw: IO[bytes]) -> IO[bytes]:
    if name.endswith(".xz"):
        return cast(IO[bytes], lzma.LZMAFile(raw))
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    if name.endswith(".bz2"):
        return cast(IO[bytes], bz2.BZ2File(raw))
    if name.endswith(".tar"):
        return raw
    raise DistbuildError(
        f"unsupported compression of {name}", hint="only xz, gzip and bzip2 are read"
    )


@contextmanager
def open_tar(path: Path, prefix: str) -> Iterator[tarfile.TarFile]:
    """Stream the ``control.tar.*`` or ``data.tar.*`` member of a package."""
    with path.open("rb") as f:
        ms = members(f, path)
        name = next((n for n in ms if n.startswith(prefix + ".tar")), None)
        if name is None:
            raise DistbuildError(f"{path}: no {prefix}.tar member")
        m = ms[name]
        raw = io.BufferedReader(_Slice(f, m.offset, m.size), 1 << 20)
        stream = _decompress(name, raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar


def control(path: Path) -> dict[str, bytes]:
    """The files of control.tar (control, md5sums, conffiles, …) by name."""
    out = {}
    with open_tar(path, "control") as tar:
        for ti in tar:
            if ti.isfile():
                fobj = tar.extractfile(ti)
                if fobj is not None:
                    out[ti.name.removeprefix("./")] = fobj.read()
    return out


def parse_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields
