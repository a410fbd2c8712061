"""Board files in synthetic build directories, laid out as the disk build writes them.

The shared layout (DESIGN.md §3): a board's disk is ``<arch>/disk/<board>/disk.img``
(+ ``disk.img.bmap``), kinds ``disk`` / ``disk-bmap``; a board with its own device
tree has ``<arch>/root/<board>/board.dtb``, kind ``dtb``; each artifact carries
``"board": "<board>"``. The bytes here are small stand-ins (the real ones come
from ``distbuild image --board``); the channel and the node only move and
check them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def dtb_bytes(board: str, version: str) -> bytes:
    """A stand-in device tree: the FDT magic, then text naming board and version."""
    return b"\xd0\x0d\xfe\xed" + f"{board} {version}\n".encode() * 32


def board_files(board: str, version: str, dtb: bool = True) -> dict[str, tuple[str, bytes]]:
    """``relative path under <arch>/`` -> (kind, bytes) of one board's files."""
    disk = f"disk {board} {version}\n".encode() * 512
    files = {
        f"disk/{board}/disk.img": ("disk", disk),
        f"disk/{board}/disk.img.bmap": ("disk-bmap", f"<bmap {board}/>\n".encode()),
    }
    if dtb:
        files[f"root/{board}/board.dtb"] = ("dtb", dtb_bytes(board, version))
    return files


def add_board_files(
    build: Path, arch: str, board: str, dtb: bool = True, **extra: tuple[str, bytes]
) -> dict[str, bytes]:
    """Write ``board``'s files into the build directory and list them in its build.json.

    ``extra``: more ``relative path -> (kind, bytes)`` (for hostile cases).
    Returns the bytes by path relative to the build directory.
    """
    record_path = build / "build.json"
    record = json.loads(record_path.read_text())
    version = record["version"]
    written: dict[str, bytes] = {}
    for rel, (kind, data) in {**board_files(board, version, dtb), **extra}.items():
        path = build / arch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[f"{arch}/{rel}"] = data
        record["artifacts"].append(
            {
                "arch": arch,
                "kind": kind,
                "path": f"{arch}/{rel}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "board": board,
            }
        )
    record_path.write_text(json.dumps(record, indent=2))
    return written
