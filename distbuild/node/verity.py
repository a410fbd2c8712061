"""dm-verity (format 1) hash trees in pure Python: compute one, verify one, check blocks.

The layout is the one ``veritysetup format --no-superblock --hash=sha256
--data-block-size=4096 --hash-block-size=4096`` writes after the data and the
kernel's dm-verity reads (``verity_hash_init`` in drivers/md/dm-verity-target.c):

- a block's digest is ``sha256(salt || block)`` (format 1 puts the salt first);
- level 0 holds the digests of the data blocks, level ``i`` those of the
  blocks of level ``i - 1``, 128 digests to a 4 KiB hash block, the last
  block of a level padded with zeros; the top level is one block, and the
  root hash is that block's digest;
- the levels are stored top first: the top block at the hash offset, level 0
  last, ending the image;
- one data block needs no tree at all: the root hash is that block's digest.

The node checks the tree against the root hash the channel signed (in
``boot.json``) before it writes anything, then every data block against its
level-0 digest before writing that block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BLOCK = 4096
DIGEST = 32  # sha256
PER_BLOCK = BLOCK // DIGEST


class VerityMismatch(Exception):
    """A hash tree, or a data block, does not match what the root hash vouches for."""


@dataclass(frozen=True)
class VerityParams:
    """The dm-verity parameters of a root image (``boot.json``'s ``verity``)."""

    roothash: str
    salt: str
    data_blocks: int
    hash_offset: int

    @classmethod
    def from_meta(cls, raw: object) -> VerityParams:
        """Parse ``boot.json``'s ``verity`` object; ValueError says what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("'verity' is not an object")
        roothash, salt = raw.get("roothash"), raw.get("salt")
        blocks, offset = raw.get("data_blocks"), raw.get("hash_offset")
        if not isinstance(roothash, str) or not _is_hex(roothash, DIGEST * 2):
            raise ValueError(f"roothash {roothash!r} is not a sha256 digest in hex")
        if not isinstance(salt, str) or not (salt == "-" or _is_hex(salt, None)):
            raise ValueError(f"salt {salt!r} is not hex")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"data_blocks {blocks!r} is not a positive integer")
        if offset is None:
            offset = blocks * BLOCK
        if isinstance(offset, bool) or not isinstance(offset, int) or offset != blocks * BLOCK:
            raise ValueError(f"hash_offset {offset!r} is not data_blocks * {BLOCK}")
        return cls(roothash.lower(), salt.lower(), blocks, offset)

    @property
    def salt_bytes(self) -> bytes:
        return b"" if self.salt == "-" else bytes.fromhex(self.salt)

    @property
    def tree_size(self) -> int:
        return tree_size(self.data_blocks)

    @property
    def image_size(self) -> int:
        """The whole root image: data, then the tree."""
        return self.hash_offset + self.tree_size


def _is_hex(text: str, length: int | None) -> bool:
    if length is not None and len(text) != length:
        return False
    if len(text) % 2:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def level_blocks(data_blocks: int) -> list[int]:
    """Hash blocks per level, level 0 first (empty for a single data block)."""
    if data_blocks < 1:
        raise ValueError("a dm-verity image has at least one data block")
    sizes: list[int] = []
    entries = data_blocks
    while entries > 1:
        entries = -(-entries // PER_BLOCK)
        sizes.append(entries)
    return sizes


def tree_size(data_blocks: int) -> int:
    """Bytes of the hash tree after ``data_blocks`` data blocks."""
    return sum(level_blocks(data_blocks)) * BLOCK


def _level_offsets(sizes: list[int]) -> list[int]:
    """Byte offset of each level in the tree, level 0 first (stored top first)."""
    offsets = [0] * len(sizes)
    position = 0
    for level in reversed(range(len(sizes))):
        offsets[level] = position
        position += sizes[level] * BLOCK
    return offsets


def _digests(salt: bytes, data: memoryview) -> bytes:
    """The concatenated digests of each BLOCK of ``data``."""
    base = hashlib.sha256(salt)
    out = bytearray()
    for start in range(0, len(data), BLOCK):
        h = base.copy()
        h.update(data[start : start + BLOCK])
        out += h.digest()
    return bytes(out)


def _pad(digests: bytes, blocks: int) -> bytes:
    return digests + bytes(blocks * BLOCK - len(digests))


def compute_tree(data: bytes | bytearray | memoryview, salt: bytes) -> tuple[bytes, str]:
    """The hash tree (as veritysetup stores it) and root hash of whole-block ``data``."""
    view = memoryview(data).cast("B")
    if not view or len(view) % BLOCK:
        raise ValueError(f"data must be a positive multiple of {BLOCK} bytes")
    digests = _digests(salt, view)
    if len(view) == BLOCK:
        return b"", digests.hex()
    levels: list[bytes] = []
    for blocks in level_blocks(len(view) // BLOCK):
        level = _pad(digests, blocks)
        levels.append(level)
        digests = _digests(salt, memoryview(level))
    return b"".join(reversed(levels)), digests.hex()


class Leaves:
    """The verified level-0 digests: what each data block must hash to.

    They are read in place from the tree (``start`` is where level 0 begins),
    not copied: on a node the tree is most of what the updater holds.
    """

    def __init__(self, salt: bytes, tree: bytes | bytearray, start: int, data_blocks: int) -> None:
        self._base = hashlib.sha256(salt)
        self._digests = tree
        self._start = start
        self.data_blocks = data_blocks

    def digest(self, index: int) -> bytes:
        """The digest data block ``index`` must have."""
        at = self._start + index * DIGEST
        return bytes(self._digests[at : at + DIGEST])

    def first_mismatch(self, first: int, blocks: memoryview) -> int | None:
        """Index of the first block of ``blocks`` (data blocks from ``first`` on,
        whole blocks only) whose digest is not the signed one; None if all match."""
        if len(blocks) % BLOCK or first + len(blocks) // BLOCK > self.data_blocks:
            raise ValueError("blocks out of the data area or not whole")
        base, digests = self._base, self._digests
        at = self._start + first * DIGEST
        for start in range(0, len(blocks), BLOCK):
            h = base.copy()
            h.update(blocks[start : start + BLOCK])
            if h.digest() != digests[at : at + DIGEST]:
                return first + start // BLOCK
            at += DIGEST
        return None


def verify_tree(params: VerityParams, tree: bytes | bytearray) -> Leaves:
    """Check a whole hash tree against the root hash; return its level-0 digests.

    Every hash block must be the one its parent's digest vouches for, the top
    block the one the root hash vouches for, and every byte after a level's
    last digest zero (veritysetup's padding), so no byte of the tree goes
    unchecked. Raises VerityMismatch saying where it differs.
    """
    salt = params.salt_bytes
    sizes = level_blocks(params.data_blocks)
    want = sum(sizes) * BLOCK
    if len(tree) != want:
        raise VerityMismatch(f"the tree is {len(tree)} bytes, not {want}")
    root = bytes.fromhex(params.roothash)
    if not sizes:
        return Leaves(salt, root, 0, 1)
    view = memoryview(tree)
    offsets = _level_offsets(sizes)
    for level, (offset, blocks) in enumerate(zip(offsets, sizes, strict=True)):
        entries = params.data_blocks if level == 0 else sizes[level - 1]
        used = offset + entries * DIGEST
        end = offset + blocks * BLOCK
        if tree.count(0, used, end) != end - used:
            raise VerityMismatch(f"level {level}: the padding after its digests is not zero")
        region = view[offset:end]
        if level + 1 < len(sizes):
            parent = offsets[level + 1]
            vouched = bytes(view[parent : parent + blocks * DIGEST])
        else:
            vouched = root
        actual = _digests(salt, region)
        if actual != vouched:
            bad = next(
                i
                for i in range(blocks)
                if actual[i * DIGEST : (i + 1) * DIGEST] != vouched[i * DIGEST : (i + 1) * DIGEST]
            )
            what = "the root hash" if level + 1 == len(sizes) else f"level {level + 1}"
            raise VerityMismatch(f"level {level}, hash block {bad}: does not match {what}")
    return Leaves(salt, tree, offsets[0], params.data_blocks)
