"""Deterministic layer tarballs.

Entries are sorted, owners numeric with no names, every mtime is
SOURCE_DATE_EPOCH, and gzip is written with a fixed header, so the same tree
gives the same bytes on any host. Tar writing and compression run in two
threads (zlib and sha256 release the GIL), which keeps both cores busy.

The layer cache (one directory per input key, ``layer.tar.gz`` and
``layer.json``) is written blob first and metadata last, and checked against
the metadata on every reuse: a crash or a flipped byte costs a rebuild, never
a wrong blob.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import stat
import struct
import tarfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distbuild.core import ui
from distbuild.core.fsutil import fsync_dir, write_atomic
from distbuild.rootfs.fetch import sha256_file

_GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"


@dataclass(frozen=True)
class Layer:
    digest: str  # sha256:… of the compressed blob
    diff_id: str  # sha256:… of the uncompressed tar
    size: int
    path: Path


class _GzipPipe:
    """A write-only stream: hashes the tar, gzips it in a thread, hashes the blob."""

    def __init__(self, out: BinaryIO, level: int, bar: ui.Progress) -> None:
        self.out = out
        self.level = level
        self.bar = bar
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.size = 0
        self.crc = 0
        self.length = 0
        self._buf: list[bytes] = []
        self._buffered = 0
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        self._buf.append(bytes(data))
        self._buffered += len(data)
        if self._buffered >= 1 << 20:
            self._flush()
        return len(data)

    def _flush(self) -> None:
        if self._buffered:
            chunk = b"".join(self._buf)
            self._buf, self._buffered = [], 0
            if self._error:
                raise self._error
            self._q.put(chunk)

    def _emit(self, data: bytes) -> None:
        if data:
            self.blob.update(data)
            self.out.write(data)
            self.size += len(data)

    def _compress(self) -> None:
        try:
            comp = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9)
            self._emit(_GZIP_HEADER)
            while (chunk := self._q.get()) is not None:
                self.diff.update(chunk)
                self.crc = zlib.crc32(chunk, self.crc)
                self.length += len(chunk)
                self._emit(comp.compress(chunk))
                self.bar.update(len(chunk))
            self._emit(comp.flush())
            self._emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF))
        except BaseException as e:  # surfaced to the writer in close()
            self._error = e
            while self._q.get() is not None:
                pass

    def close(self) -> None:
        self._flush()
        self._q.put(None)
        self._thread.join()
        if self._error:
            raise self._error


def _entries(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            out.append(rel)
        # Symlinks to directories come in dirnames but are not walked into;
        # they are entries like files.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + links):
            out.append(name if rel == "." else f"{rel}/{name}")
    return sorted(set(out), key=lambda p: p.split("/"))


def tar_entries(root: Path, epoch: int) -> list[tuple[tarfile.TarInfo, Path | None]]:
    """The tar headers of a tree, in order, with the file each regular entry reads."""
    seen: dict[tuple[int, int], str] = {}
    items = []
    for rel in _entries(root):
        path = root / rel
        st = os.lstat(path)
        ti = tarfile.TarInfo(rel)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = epoch
        ti.mode = stat.S_IMODE(st.st_mode)
        src: Path | None = None
        if stat.S_ISDIR(st.st_mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                ti.type = tarfile.LNKTYPE
                ti.linkname = seen[key]
            else:
                seen[key] = rel
                ti.size = st.st_size
                src = path
        else:
            continue  # devices and sockets do not belong in an image layer
        items.append((ti, src))
    return items


def write_layer(root: Path, dest: Path, epoch: int, level: int = 6) -> Layer:
    """Write ``root`` as a gzip layer blob at ``dest``."""
    entries = tar_entries(root, epoch)
    total = sum(ti.size for ti, _ in entries)
    tmp = dest.with_name(f"{dest.name}.part-{os.getpid()}-{threading.get_ident()}")
    try:
        with tmp.open("wb") as out, ui.progress("compress", total) as bar:
            pipe = _GzipPipe(out, level, bar)
            try:
                with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
                    for ti, src in entries:
                        if src is None:
                            tar.addfile(ti)
                        else:
                            with src.open("rb") as f:
                                tar.addfile(ti, f)
            finally:
                pipe.close()
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return Layer(
        digest="sha256:" + pipe.blob.hexdigest(),
        diff_id="sha256:" + pipe.diff.hexdigest(),
        size=pipe.size,
        path=dest,
    )


def reuse_layer(entry: Path) -> Layer | None:
    """A layer cache entry's layer if its blob has the digest and size its layer.json says.

    A damaged or half-written entry gives None (and a warning): the caller
    rebuilds it and :func:`store_layer` replaces it.
    """
    meta, blob = entry / "layer.json", entry / "layer.tar.gz"
    if not meta.exists() and not blob.exists():
        return None
    try:
        m = json.loads(meta.read_text())
        layer = Layer(str(m["digest"]), str(m["diff_id"]), int(m["size"]), blob)
        if blob.stat().st_size == layer.size and f"sha256:{sha256_file(blob)}" == layer.digest:
            return layer
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ui.warn(f"the cached layer {entry} is damaged or incomplete; rebuilding it")
    meta.unlink(missing_ok=True)
    return None


def store_layer(entry: Path, built: Layer) -> Layer:
    """Move a fresh layer into the cache: the blob first, layer.json last, each atomically."""
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "layer.json").unlink(missing_ok=True)
    blob = entry / "layer.tar.gz"
    os.replace(built.path, blob)
    fsync_dir(entry)
    meta = {"digest": built.digest, "diff_id": built.diff_id, "size": built.size}
    write_atomic(entry / "layer.json", json.dumps(meta).encode())
    return dataclasses.replace(built, path=blob)
