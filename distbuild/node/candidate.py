"""What the node checks of a candidate release before it writes a byte of it.

The channel's signed metadata names every file of a release; the custom
fields of each target must say this node's image, version and arch (and board,
when the release names boards; the device tree must be signed as this node's
board's). The slot's small boot files (``boot.json``, kernel, initramfs, the
board's device tree) are fetched whole and checked against their signed length
and sha256, and ``boot.json``'s kernel command line must agree with the root
image's dm-verity parameters, or the slot would never boot.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from distbuild.core.bootctl.base import SlotBoot
from distbuild.node.http import Http
from distbuild.node.tufclient import (
    BOOT,
    DTB,
    INITRD,
    KERNEL,
    ROOT_IMAGE,
    Candidate,
    Refused,
    Target,
)
from distbuild.node.verity import VerityParams

BOOT_FILE_LIMIT = 256 << 20  # a kernel or initramfs larger than this is not one
DTB_LIMIT = 16 << 20  # device trees are tens of KiB; U-Boot and Linux cap them far lower


def check_targets(candidate: Candidate, image: str, arch: str, board: str | None) -> None:
    """Refuse a release whose signed custom metadata is not for this node."""
    for role, t in candidate.files.items():
        custom = t.custom
        for key, want in (("image", image), ("version", candidate.version), ("arch", arch)):
            if str(custom.get(key)) != want:
                raise Refused(
                    f"{t.path} is signed as {key} {custom.get(key)!r}, this node needs "
                    f"{want!r}; refused before writing",
                    hint="the channel lists a file of another build under this release",
                )
        boards = _boards(custom)
        if boards and board not in boards:
            raise Refused(
                f"{t.path} is for board(s) {', '.join(boards)}, this node is "
                f"{board or 'of no named board'}; refused before writing",
                hint="set board in the updater config if this node is one of them",
            )
        if role in (ROOT_IMAGE, DTB) and t.length <= 0:
            raise Refused(f"{t.path} is empty")
        if role == DTB and (custom.get("board") != board or custom.get("kind") != DTB):
            raise Refused(
                f"{t.path} is signed as {custom.get('kind')!r} of board "
                f"{custom.get('board')!r}, not as the device tree of {board!r}; refused "
                "before writing",
                hint="the channel lists another file as this board's device tree",
            )


def slot_boot(http: Http, candidate: Candidate) -> tuple[SlotBoot, VerityParams | None]:
    """Fetch and verify the slot's boot entry, kernel, initramfs and device tree
    (if the candidate has one for this node's board), and the root image's
    dm-verity parameters from the boot entry (None if it has none)."""
    path = candidate.files[BOOT].path
    try:
        meta = json.loads(fetch_signed(http, candidate.files[BOOT], 1 << 20))
    except ValueError:
        raise Refused(f"{path} is not JSON") from None
    cmdline = meta.get("cmdline") if isinstance(meta, dict) else None
    if not isinstance(cmdline, str) or not cmdline.strip():
        raise Refused(f"{path} has no kernel command line")
    if meta.get("version", candidate.version) != candidate.version:
        raise Refused(f"{path} describes version {meta.get('version')}")
    verity = None
    if "verity" in meta:
        try:
            verity = VerityParams.from_meta(meta["verity"])
        except ValueError as e:
            raise Refused(f"{path}: unusable dm-verity parameters: {e}") from None
        _check_cmdline(path, cmdline, verity)
    kernel = fetch_signed(http, candidate.files[KERNEL], BOOT_FILE_LIMIT)
    initrd = fetch_signed(http, candidate.files[INITRD], BOOT_FILE_LIMIT)
    dtb = candidate.files.get(DTB)
    blob = fetch_signed(http, dtb, DTB_LIMIT) if dtb is not None else None
    return SlotBoot(candidate.version, kernel, initrd, cmdline.strip(), dtb=blob), verity


def _check_cmdline(path: str, cmdline: str, verity: VerityParams) -> None:
    # The initramfs sets dm-verity up from the command line: it must name
    # the tree the payload is checked against, or the slot would never boot.
    words = dict(w.partition("=")[::2] for w in cmdline.split())
    for key, want in (
        ("distbuild.verity", verity.roothash),
        ("distbuild.verity_salt", verity.salt),
        ("distbuild.verity_blocks", str(verity.data_blocks)),
    ):
        if key in words and words[key].lower() != want:
            raise Refused(
                f"{path}: the kernel command line's {key}={words[key]} is not its "
                f"dm-verity parameters' {want}; refused before writing",
                hint="the release's boot.json is inconsistent; publish a fresh build",
            )


def fetch_signed(http: Http, target: Target, limit: int) -> bytes:
    """The bytes of a small target, at most ``limit``, exactly as the channel signed them."""
    if target.length > limit:
        raise Refused(f"{target.path} is {target.length} bytes; a boot file is at most {limit}")
    data = http.get(target.url, target.length)
    if len(data) != target.length or hashlib.sha256(data).hexdigest() != target.sha256:
        raise Refused(
            f"{target.path}: the bytes served are not the ones the channel signed",
            hint="the server or something between it and the node altered the file",
        )
    return data


def _boards(custom: dict[str, Any]) -> list[str]:
    raw = custom.get("boards", custom.get("board"))
    if raw is None or raw == "" or raw == "*":
        return []
    if isinstance(raw, list):
        return [str(b) for b in raw]
    return [b.strip() for b in str(raw).split(",") if b.strip()]
