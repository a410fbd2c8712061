"""``distbuild flash``: write a board's disk image onto a card (or any block device or file).

The image comes from a build, a file or a channel (distbuild.disk.flashsrc);
the card is checked and opened by distbuild.disk.flashdev. Then, in order:

1. the provisioning file, if any, is checked by the node's own parser;
2. the image is checked against its bmap (size and every mapped range), so a
   mismatched pair never reaches the card;
3. the mapped ranges are written, holes skipped (as ``bmaptool copy`` does:
   a hole keeps what the card held before; nothing in the image reads it);
4. the card is synced, its cached pages dropped, and every written range read
   back and checked against the bmap's sha256;
5. the provisioning file goes onto the written boot partition.

An image without a bmap is written whole onto a device (its old bytes must
go), and without its zero blocks into a new file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from distbuild.core import bmap, ui
from distbuild.core.errors import DistbuildError, Interrupted
from distbuild.disk.flashdev import open_target, target_kind
from distbuild.disk.flashsrc import Source
from distbuild.disk.provision import check_provision_file, write_provision


@dataclass(frozen=True)
class Flashed:
    source: str
    image: str
    target: str
    bytes: int  # the image's size
    written: int  # bytes written: the mapped ranges
    writes: int  # write calls
    verified: int  # bytes read back and checked
    bmap: bool  # whether the image came with a bmap (else every block was mapped)
    provision: str | None  # its name on the boot partition


class FlashError(DistbuildError):
    """Writing or checking the card failed after it was touched."""


def _partial(target: Path, block: bool, done: int, total: int) -> str:
    if not block:
        return f"{target} was left as it was"
    if done == total:
        return f"{target} holds the whole image, but not as written: do not boot from it"
    return f"partial write: {target} holds {done} of the image's {total} mapped bytes"


def _write(
    mapping: bmap.Bmap,
    src: BinaryIO,
    dest: BinaryIO,
    target: Path,
    block: bool,
    after_sync: Callable[[], None] | None,
) -> bmap.Stats:
    """Write, sync, read back; failures say what the card holds now."""
    total = mapping.mapped_bytes
    stats = bmap.Stats()
    try:
        with ui.progress(f"writing {target}", total) as bar:
            bmap.write(mapping, src, dest, bar.update, stats)
        bmap.sync(dest)
        if after_sync is not None:
            after_sync()
        with ui.progress(f"verifying {target}", total) as bar:
            bmap.verify(mapping, dest, bar.update, stats)
    except bmap.MismatchError as e:
        raise FlashError(
            f"{e.message}; {_partial(target, block, e.written, total)}", e.hint
        ) from None
    except (KeyboardInterrupt, Interrupted):
        ui.warn(_partial(target, block, stats.bytes_written, total))
        raise
    except OSError as e:
        raise FlashError(
            f"writing {target} failed: {e.strerror or e}; "
            + _partial(target, block, stats.bytes_written, total),
            hint="check the card and its reader (dmesg), then flash it again",
        ) from None
    return stats


def flash(
    source: Source,
    target: Path,
    *,
    force: bool = False,
    provision: Path | None = None,
    after_sync: Callable[[], None] | None = None,
) -> Flashed:
    """Write ``source`` onto ``target``, check every written block, then add ``provision``.

    ``after_sync`` runs between the sync and the read-back (tests damage the
    card there, to prove the read-back reads the card).
    """
    if provision is not None:
        check_provision_file(provision)  # before a byte of the card is touched
    kind = target_kind(target, source.image)[0]
    with source.image.open("rb") as src:
        if source.bmap is None:
            mapping = bmap.scan(src, skip_zeros=kind != "block")
        else:
            mapping = source.bmap
            ui.note(f"checking {source.image} against its bmap")
            bmap.check_image(mapping, src)
        with open_target(target, source.image, mapping.image_size, force) as (dest, where):
            stats = _write(mapping, src, dest, target, kind == "block", after_sync)
            name = write_provision(where, provision) if provision is not None else None
            if name is not None:
                dest.flush()
                os.fsync(dest.fileno())
    return Flashed(
        source=source.label,
        image=str(source.image),
        target=str(target),
        bytes=mapping.image_size,
        written=stats.bytes_written,
        writes=stats.writes,
        verified=stats.bytes_verified,
        bmap=source.bmap is not None,
        provision=name,
    )
