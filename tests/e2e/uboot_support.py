"""Helpers for the U-Boot boot tests: a qemu console reader and a minimal armv7 slot.

The minimal slot is the recipe's Debian kernel with a one-file initramfs
(busybox-static) that prints the booted line and powers off, or fails, as
told. It exercises U-Boot and the boot script with nothing else in the way.
"""

from __future__ import annotations

import gzip
import io
import os
import select
import shutil
import struct
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.arch import get_arch
from distbuild.bootctl.base import ImageFiles
from distbuild.disk.bootchain import get_chain
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.rootfs.apt import resolve_lock
from distbuild.rootfs.deb import open_tar
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.sources import sources_for
from distbuild.run import popen, run

BOOT_OFFSET = 1 << 20


@dataclass
class Console:
    """A qemu guest's serial console, read line by line with a deadline."""

    proc: subprocess.Popen[bytes]
    log: Path
    lines: list[str] = field(default_factory=list)
    _buf: bytes = b""

    def wait_for(self, *texts: str, timeout: float) -> str | None:
        """Read until a line contains one of ``texts``; return that text, or None
        when the guest exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with self.log.open("ab") as log:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        return None
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                log.write(chunk)
                self._buf += chunk
                while b"\n" in self._buf:
                    raw, self._buf = self._buf.split(b"\n", 1)
                    line = raw.decode(errors="replace").rstrip("\r")
                    self.lines.append(line)
                    for text in texts:
                        if text in line:
                            return text
        return None

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_qemu(recipe: Recipe, disk: Path, workdir: Path) -> Console:
    """Boot ``disk`` under TCG with the recipe's boot chain, console on a pipe."""
    chain = get_chain(recipe.boot_chain)
    state = workdir / "qemu-state"
    state.mkdir(exist_ok=True)
    argv = [
        f"qemu-system-{recipe.arch.qemu_system}",
        "-accel",
        "tcg",
        "-m",
        str(recipe.qemu_memory),
        "-nographic",
        "-nic",
        "none",
        *chain.qemu_args(recipe, disk, state),
    ]
    proc = popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Console(proc, workdir / "console.log")


# --- a minimal armv7 slot -----------------------------------------------------------


@dataclass(frozen=True)
class MiniSlot:
    kernel: bytes
    busybox: bytes


def fetch_mini_slot(project: Path, cache: Path, workdir: Path) -> tuple[Recipe, MiniSlot]:
    """The armv7 recipe's kernel and busybox-static, through the project's package code."""
    recipe = load_recipe(project, get_arch("armv7"))
    sources = sources_for(recipe.suite, recipe.components, recipe.mirror)
    lock = resolve_lock(
        cache, "uboot-test", "armv7", "armhf", recipe.suite, sources,
        [recipe.kernel_package, "busybox-static"],
    )  # fmt: skip
    wanted = [
        p for p in lock.packages if p.name.startswith("linux-image-") or p.name == "busybox-static"
    ]
    debs = DebCache(cache)
    debs.ensure(wanted)
    kernel = busybox = None
    for pkg in wanted:
        with open_tar(debs.verified(pkg), "data") as tar:
            for ti in tar:
                name = ti.name.removeprefix("./")
                if ti.isfile() and name.startswith("boot/vmlinuz-"):
                    kernel = _read(tar, ti)
                elif ti.isfile() and name in ("bin/busybox", "usr/bin/busybox"):
                    busybox = _read(tar, ti)
    assert kernel and busybox, "kernel or busybox-static not found in their packages"
    return recipe, MiniSlot(kernel, busybox)


def _read(tar: tarfile.TarFile, ti: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(ti)
    assert f is not None
    return f.read()


def mini_initrd(busybox: bytes, *, fail: bool) -> bytes:
    """A newc initramfs whose /init prints the booted line, then powers off (or dies)."""
    init = (
        "#!/bin/busybox sh\n"
        "/bin/busybox mount -t proc proc /proc\n"
        "for w in $(/bin/busybox cat /proc/cmdline); do case $w in\n"
        "  distbuild.slot=*) slot=${w#*=} ;; distbuild.version=*) version=${w#*=} ;;\n"
        "esac; done\n"
        'echo "distbuild-os: booted slot=$slot version=$version arch=armv7"\n'
    )
    init += "exit 1\n" if fail else "/bin/busybox poweroff -f\n"
    files = {"bin/busybox": (busybox, 0o755), "init": (init.encode(), 0o755)}
    return gzip.compress(_newc(["bin", "proc"], files), mtime=0)


def _newc(dirs: list[str], files: dict[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        namez = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0]
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields))
        out.write(namez + b"\0" * ((-(110 + len(namez))) % 4))
        out.write(data + b"\0" * ((-len(data)) % 4))
        ino += 1

    for d in dirs:
        entry(d, 0o040755, b"")
    for name, (data, mode) in files.items():
        entry(name, 0o100000 | mode, data)
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


def blank_uboot_disk(recipe: Recipe, path: Path) -> ImageFiles:
    """A GPT disk with just the U-Boot boot partition, laid out by the chain itself."""
    chain = get_chain("u-boot")
    mib = 32
    run(["truncate", "-s", f"{mib + 2}M", path])
    run([
        "sgdisk", f"-n1:{BOOT_OFFSET // 512}:+{mib}M", f"-t1:{chain.partition_type}",
        f"-c1:{chain.partition_label}", path,
    ])  # fmt: skip
    fat = path.with_suffix(".fat")
    run(["mkfs.vfat", "-n", "BOOT", "-C", fat, str(mib * 1024)])
    with path.open("r+b") as disk, fat.open("rb") as src:
        disk.seek(BOOT_OFFSET)
        shutil.copyfileobj(src, disk)
    fat.unlink()
    files = ImageFiles(path, BOOT_OFFSET)
    for name, data in chain.loader_files(recipe, path.parent).items():
        files.write(name, data if isinstance(data, bytes) else data.read_bytes())
    return files


def gpt_partitions(disk: Path) -> dict[str, tuple[int, int]]:
    """Partition label -> (byte offset, byte size), read from the primary GPT."""
    with disk.open("rb") as f:
        f.seek(512)
        header = f.read(92)
        assert header[:8] == b"EFI PART", f"{disk} has no GPT"
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * 512)
        table = f.read(count * entry_size)
    out: dict[str, tuple[int, int]] = {}
    for i in range(count):
        e = table[i * entry_size : (i + 1) * entry_size]
        if uuid.UUID(bytes_le=e[:16]).int == 0:
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        label = e[56:128].decode("utf-16-le").rstrip("\0")
        out[label] = (first * 512, (last - first + 1) * 512)
    return out
