"""Root images with dm-verity, module selection, and the initramfs archive."""

from __future__ import annotations

import hashlib
import shutil
import stat
import sys
from pathlib import Path

import pytest

from distbuild.core.errors import RecipeError
from distbuild.disk.initramfs import Cpio, elf_needs
from distbuild.disk.modules import ModuleIndex
from distbuild.disk.rootimg import BLOCK, add_verity, make_fs, verify


@pytest.mark.parametrize("fs", ["squashfs", "erofs"])
def test_verity_catches_one_flipped_byte(tmp_path: Path, fs: str) -> None:
    tool = "mksquashfs" if fs == "squashfs" else "mkfs.erofs"
    if not shutil.which(tool) or not shutil.which("veritysetup"):
        pytest.skip(f"needs {tool} and veritysetup")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("node\n")
    # Incompressible, so the image spans many blocks and has a real hash tree.
    (tree / "big").write_bytes(b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(40000)))
    image = tmp_path / "root.img"
    make_fs(fs, tree, image, 1764201600)
    fs_size = image.stat().st_size
    assert fs_size % BLOCK == 0
    verity = add_verity(image)
    assert verity.data_blocks * BLOCK == fs_size
    assert image.stat().st_size > fs_size  # the hash tree follows the data
    assert verify(image, verity)
    # The same tree gives the same bytes (and so the same root hash).
    again = tmp_path / "again.img"
    make_fs(fs, tree, again, 1764201600)
    assert add_verity(again) == verity
    with image.open("r+b") as f:
        f.seek(fs_size // 2)
        b = f.read(1)
        f.seek(fs_size // 2)
        f.write(bytes([b[0] ^ 1]))
    assert not verify(image, verity)


def _modules(tmp_path: Path) -> Path:
    root = tmp_path / "6.1.0-1-test"
    root.mkdir()
    (root / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n"
        "kernel/lib/crc16.ko:\n"
        "kernel/fs/jbd2/jbd2.ko:\n"
        "kernel/crypto/crc32c_generic.ko:\n"
        "kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n"
        "kernel/drivers/md/dm-mod.ko:\n"
    )
    (root / "modules.softdep").write_text("softdep ext4 pre: crypto-crc32c\n")
    (root / "modules.alias").write_text("alias crypto-crc32c crc32c_generic\n")
    (root / "modules.builtin").write_text("kernel/fs/fat/vfat.ko\n")
    return root


def test_module_load_order_has_deps_softdeps_and_skips_builtins(tmp_path: Path) -> None:
    index = ModuleIndex.load(_modules(tmp_path))
    order = index.load_order(["dm_verity", "vfat", "ext4"])
    assert order == [
        "kernel/drivers/md/dm-mod.ko",
        "kernel/drivers/md/dm-verity.ko",
        "kernel/crypto/crc32c_generic.ko",
        "kernel/lib/crc16.ko",
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/ext4/ext4.ko",
    ]
    with pytest.raises(RecipeError, match=r"'virtio_gpu' is not in kernel 6\.1\.0-1-test") as e:
        index.load_order(["virtio_gpu"], where="recipes/amd64.yaml")
    assert "kernel.modules" in str(e.value)


def test_elf_needs_reads_interpreter_and_libraries() -> None:
    interp, needed = elf_needs(Path(sys.executable).resolve().read_bytes())
    assert interp is not None and interp.startswith("/lib")
    assert any(n.startswith("libc.so") for n in needed)


def _read_cpio(data: bytes) -> dict[str, tuple[int, bytes, int, int]]:
    out = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, rmaj, rmin)


def test_cpio_holds_files_links_and_the_console_device() -> None:
    c = Cpio(1764201600)
    c.file("usr/bin/tool", b"#!/bin/sh\n", 0o755)
    c.symlink("bin", "usr/bin")
    c.chardev("dev/console", 5, 1)
    entries = _read_cpio(c.finish())
    assert stat.S_ISDIR(entries["usr"][0]) and stat.S_ISDIR(entries["usr/bin"][0])
    mode, body, _, _ = entries["usr/bin/tool"]
    assert stat.S_IMODE(mode) == 0o755 and body == b"#!/bin/sh\n"
    assert stat.S_ISLNK(entries["bin"][0]) and entries["bin"][1] == b"usr/bin"
    mode, _, major, minor = entries["dev/console"]
    assert stat.S_ISCHR(mode) and (major, minor) == (5, 1)
