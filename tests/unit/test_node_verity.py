"""distbuild/node/verity.py against what ``veritysetup format`` really writes.

Each image is made in tmp by veritysetup with the build's flags (add_verity's):
1 data block (no tree at all), 2 (one hash block), 129 (two levels) and 16385
(three levels; a sparse file, so it costs little). The pure-Python tree must be
byte-identical to veritysetup's, verify_tree must accept it and give the digest
of every data block, and any change to the tree (a digest of any level, the top
block, the zero padding) or to a data block must be caught.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from distbuild.core.run import run
from distbuild.node.verity import (
    BLOCK,
    DIGEST,
    VerityMismatch,
    VerityParams,
    compute_tree,
    level_blocks,
    tree_size,
    verify_tree,
)

SALT = "5a1753a1fe" * 6 + "abcd"  # 32 bytes, as add_verity's sha256 salt

pytestmark = pytest.mark.skipif(not shutil.which("veritysetup"), reason="needs veritysetup")


@dataclass(frozen=True)
class Image:
    data: bytes
    tree: bytes
    params: VerityParams


def veritysetup_image(tmp: Path, blocks: int) -> Image:
    path = tmp / f"img-{blocks}"
    with path.open("wb") as f:
        f.truncate(blocks * BLOCK)
        # Distinct blocks at both ends and in the middle; the rest stays sparse zeros.
        for index in {0, blocks // 2, blocks - 1}:
            f.seek(index * BLOCK)
            f.write(os.urandom(BLOCK))
    out = run(
        [
            "veritysetup",
            "format",
            path,
            path,
            f"--hash-offset={blocks * BLOCK}",
            f"--data-blocks={blocks}",
            "--no-superblock",
            f"--salt={SALT}",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ],
        capture=True,
    )
    roothash = next(
        line.split(":", 1)[1].strip()
        for line in out.stdout.decode().splitlines()
        if line.startswith("Root hash:")
    )
    raw = path.read_bytes()
    params = VerityParams(roothash, SALT, blocks, blocks * BLOCK)
    return Image(raw[: blocks * BLOCK], raw[blocks * BLOCK :], params)


@pytest.fixture(scope="module", params=[1, 2, 129, 16385])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Image:
    return veritysetup_image(tmp_path_factory.mktemp("verity"), request.param)


def test_the_tree_is_byte_identical_to_veritysetups(image: Image) -> None:
    tree, roothash = compute_tree(image.data, bytes.fromhex(SALT))
    assert roothash == image.params.roothash
    assert tree == image.tree
    assert len(image.tree) == tree_size(image.params.data_blocks) == image.params.tree_size
    assert image.params.image_size == len(image.data) + len(image.tree)


def test_level_layout(image: Image) -> None:
    levels = {1: [], 2: [1], 129: [2, 1], 16385: [129, 2, 1]}[image.params.data_blocks]
    assert level_blocks(image.params.data_blocks) == levels


def test_verified_leaves_check_every_data_block(image: Image) -> None:
    leaves = verify_tree(image.params, image.tree)
    data = memoryview(image.data)
    assert leaves.first_mismatch(0, data) is None
    last = image.params.data_blocks - 1
    assert leaves.first_mismatch(last, data[last * BLOCK :]) is None
    # One flipped bit in a data block: that block, and only from where it is.
    changed = bytearray(image.data)
    changed[last * BLOCK + 17] ^= 0x01
    assert leaves.first_mismatch(0, memoryview(changed)) == last
    # A block checked under another index does not pass (the index matters).
    if image.params.data_blocks > 1:
        assert leaves.first_mismatch(1, data[:BLOCK]) == 1


def flipped(tree: bytes, at: int) -> bytes:
    out = bytearray(tree)
    out[at] ^= 0x80
    return bytes(out)


def test_every_part_of_the_tree_is_checked(image: Image) -> None:
    p = image.params
    sizes = level_blocks(p.data_blocks)
    if not sizes:
        # One data block: no tree at all, the root hash is that block's digest.
        # Any bytes offered as a tree are refused, and the block is checked
        # against the root hash itself.
        with pytest.raises(VerityMismatch):
            verify_tree(p, b"\0" * BLOCK)
        leaves = verify_tree(p, image.tree)
        assert leaves.first_mismatch(0, memoryview(image.data)) is None
        assert leaves.first_mismatch(0, memoryview(flipped(image.data, 5))) == 0
        return
    positions: dict[str, int] = {}
    offset = 0
    for level in reversed(range(len(sizes))):  # stored top level first
        entries = p.data_blocks if level == 0 else sizes[level - 1]
        positions[f"level {level}: first digest"] = offset
        positions[f"level {level}: last digest"] = offset + entries * DIGEST - 1
        positions[f"level {level}: padding"] = offset + sizes[level] * BLOCK - 1
        offset += sizes[level] * BLOCK
    missed = []
    for where, at in positions.items():
        try:
            verify_tree(p, flipped(image.tree, at))
        except VerityMismatch:
            continue
        missed.append(where)
    assert not missed, f"a flipped byte went unnoticed in: {missed}"


def test_wrong_root_hash_salt_or_length_is_refused(image: Image) -> None:
    p = image.params
    other_root = VerityParams(("0" if p.roothash[0] != "0" else "1") + p.roothash[1:], *_rest(p))
    if p.tree_size:
        with pytest.raises(VerityMismatch, match="root hash"):
            verify_tree(other_root, image.tree)
        other_salt = VerityParams(p.roothash, "00" + SALT[2:], p.data_blocks, p.hash_offset)
        with pytest.raises(VerityMismatch):
            verify_tree(other_salt, image.tree)
        with pytest.raises(VerityMismatch, match="bytes, not"):
            verify_tree(p, image.tree[:-BLOCK])
    else:
        # No tree: the root hash is the one block's digest, checked block by block.
        leaves = verify_tree(other_root, b"")
        assert leaves.first_mismatch(0, memoryview(image.data)) == 0
    with pytest.raises(VerityMismatch):
        verify_tree(p, image.tree + bytes(BLOCK))


def _rest(p: VerityParams) -> tuple[str, int, int]:
    return p.salt, p.data_blocks, p.hash_offset


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ("x", "not an object"),
        ({"roothash": "ab", "salt": "00", "data_blocks": 1}, "roothash"),
        ({"roothash": "g" * 64, "salt": "00", "data_blocks": 1}, "roothash"),
        ({"roothash": "a" * 64, "salt": "0", "data_blocks": 1}, "salt"),
        ({"roothash": "a" * 64, "salt": "00", "data_blocks": 0}, "data_blocks"),
        ({"roothash": "a" * 64, "salt": "00", "data_blocks": True}, "data_blocks"),
        (
            {"roothash": "a" * 64, "salt": "00", "data_blocks": 2, "hash_offset": 4096},
            "hash_offset",
        ),
    ],
)
def test_malformed_parameters_are_rejected(meta: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        VerityParams.from_meta(meta)


def test_parameters_as_a_build_writes_them() -> None:
    meta = {"roothash": "AB" * 32, "salt": SALT, "data_blocks": 3, "hash_offset": 3 * BLOCK}
    p = VerityParams.from_meta(meta)
    assert p == VerityParams("ab" * 32, SALT, 3, 3 * BLOCK)
    assert p.image_size == 3 * BLOCK + BLOCK
