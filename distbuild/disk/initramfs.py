"""The node's initramfs: busybox, dmsetup, a few modules, and its own /init.

/init finds its slot's root partition by GPT label (``root-<slot>``), maps
it through dm-verity with the root hash from the kernel command line, mounts
it read-only, mounts ``data`` for /var and the /etc overlay, and switches
root. Any failure makes /init exit, the kernel panics, and ``panic=N``
reboots into the boot loader, whose try counter then counts the failure.

Everything is target-arch code from locked packages, copied, never run; the
cpio archive is written in Python (newc, fixed owners and times) so the same
inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.model.recipe import Recipe
from distbuild.rootfs.extract import usr_path
from distbuild.rootfs.rootpath import RootDir

# Modules /init itself needs beyond the recipe's drivers: /etc and /var are
# overlays on the data partition.
INIT_MODULES = ("overlay",)

INIT = r"""#!/usr/bin/busybox sh
# distbuild initramfs: verify and mount this slot's root, then switch to it.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/usr/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
. /etc/distbuild/initramfs.conf

die() {
    echo "distbuild-initramfs: error: $*"
    exit 1  # init exits, the kernel panics, panic=N reboots: the try is counted
}

for word in $(cat /proc/cmdline); do
    case "$word" in
        distbuild.slot=*) SLOT=${word#*=} ;;
        distbuild.version=*) VERSION=${word#*=} ;;
        distbuild.verity=*) ROOTHASH=${word#*=} ;;
        distbuild.verity_salt=*) SALT=${word#*=} ;;
        distbuild.verity_blocks=*) BLOCKS=${word#*=} ;;
        init=*) INIT=${word#*=} ;;
    esac
done
case "$SLOT" in a|b) ;; *) die "no distbuild.slot=a|b on the kernel command line" ;; esac
[ -n "$ROOTHASH" ] && [ -n "$SALT" ] && [ -n "$BLOCKS" ] || die "no dm-verity parameters on the kernel command line"
echo "distbuild-initramfs: slot=$SLOT version=$VERSION"

for m in $MODULES; do
    insmod "/usr/lib/modules/$KERNEL/$m" 2>/dev/null  # a CPU-specific variant may not load
done

partition() {
    for u in /sys/class/block/*/uevent; do
        if grep -qx "PARTNAME=$1" "$u"; then
            sed -n 's/^DEVNAME=//p' "$u"
            return
        fi
    done
}
tries=0
while ROOTDEV=$(partition "root-$SLOT"); [ -z "$ROOTDEV" ]; do
    tries=$((tries + 1))
    [ $tries -gt 200 ] && die "no partition labelled root-$SLOT"
    sleep 0.05
done

# The hash tree follows the data blocks in the same partition (no superblock).
dmsetup create root --readonly --table \
    "0 $((BLOCKS * 8)) verity 1 /dev/$ROOTDEV /dev/$ROOTDEV 4096 4096 $BLOCKS $BLOCKS sha256 $ROOTHASH $SALT 1 panic_on_corruption" \
    || die "dm-verity rejected root-$SLOT"
[ -b /dev/mapper/root ] || dmsetup mknodes root
mount -t "$FS" -o ro /dev/mapper/root /newroot || die "cannot mount root-$SLOT ($FS)"

DATADEV=$(partition data)
if [ -n "$DATADEV" ] && mount -t ext4 -o noatime "/dev/$DATADEV" /newroot/data; then
    for d in etc var; do
        mkdir -p "/newroot/data/$d/upper" "/newroot/data/$d/work"
        mount -t overlay overlay \
            -o "lowerdir=/newroot/$d,upperdir=/newroot/data/$d/upper,workdir=/newroot/data/$d/work" \
            "/newroot/$d" || die "cannot mount the /$d overlay"
    done
else
    echo "distbuild-initramfs: warning: no data partition; /etc and /var stay read-only"
fi

for d in dev proc sys; do
    mount --move "/$d" "/newroot/$d"
done
exec switch_root /newroot "${INIT:-/sbin/init}"
"""


# --- ELF: which shared libraries a binary needs (read, never run) -------------

PT_DYNAMIC, PT_INTERP, PT_LOAD = 2, 3, 1
DT_NEEDED, DT_STRTAB = 1, 5


def elf_needs(data: bytes) -> tuple[str | None, list[str]]:
    """The program interpreter and DT_NEEDED libraries of an ELF file."""
    if data[:4] != b"\x7fELF":
        raise DistbuildError("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "Q", data, 0x20)[0],
            *struct.unpack_from(end + "HH", data, 0x36),
        )
        ph = struct.Struct(end + "IIQQQQQQ")  # type flags offset vaddr paddr filesz memsz align
        dyn = struct.Struct(end + "qQ")
    else:
        phoff, phentsize, phnum = (
            struct.unpack_from(end + "I", data, 0x1C)[0],
            *struct.unpack_from(end + "HH", data, 0x2A),
        )
        ph = struct.Struct(end + "IIIIIIII")  # type offset vaddr paddr filesz memsz flags align
        dyn = struct.Struct(end + "iI")
    loads: list[tuple[int, int, int]] = []
    interp = None
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        f = ph.unpack_from(data, phoff + i * phentsize)
        if is64:
            p_type, p_offset, p_vaddr, p_filesz = f[0], f[2], f[3], f[5]
        else:
            p_type, p_offset, p_vaddr, p_filesz = f[0], f[1], f[2], f[4]
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return interp, []
    needed, strtab = [], None
    for off in range(dynamic[0], dynamic[0] + dynamic[1], dyn.size):
        tag, val = dyn.unpack_from(data, off)
        if tag == 0:
            break
        if tag == DT_NEEDED:
            needed.append(val)
        elif tag == DT_STRTAB:
            strtab = val
    if strtab is None:
        return interp, []
    base = next((o + strtab - v for v, o, sz in loads if v <= strtab < v + sz), None)
    if base is None:
        raise DistbuildError("ELF string table outside every loaded segment")
    names = [data[base + n : data.index(b"\0", base + n)].decode() for n in needed]
    return interp, names


def _lib_dirs(tools: Path) -> list[Path]:
    # The multiarch directory is whichever the target packages unpacked.
    dirs = sorted(p for p in (tools / "usr/lib").glob("*-linux-*") if p.is_dir())
    return [*dirs, tools / "usr/lib", tools / "usr/lib64"]


def with_libraries(tools: Path, binary: str) -> dict[str, bytes]:
    """A binary from the tools tree plus every library it loads, by target path."""
    out: dict[str, bytes] = {}
    root = RootDir(tools)
    todo = [binary]
    while todo:
        rel = todo.pop()
        # Symlinks are followed inside the tools tree (never onto the host);
        # the copy holds the real bytes under the name the loader asks for.
        data = root.read_bytes(rel)
        out[rel] = data
        interp, needed = elf_needs(data)
        if interp:
            irel = usr_path(interp)
            if irel not in out:
                todo.append(irel)
        for lib in needed:
            found = next((d / lib for d in _lib_dirs(tools) if os.path.lexists(d / lib)), None)
            if found is None:
                raise DistbuildError(f"{binary} needs {lib}, which the boot tools do not have")
            lrel = str(found.relative_to(tools))
            if lrel not in out and lrel not in todo:
                todo.append(lrel)
    return out


# --- cpio (newc) ---------------------------------------------------------------


class Cpio:
    """An in-memory newc archive with fixed owners and times."""

    def __init__(self, mtime: int) -> None:
        self.mtime = mtime
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self.ino,
            mode,
            0,
            0,
            2 if stat.S_ISDIR(mode) else 1,
            self.mtime,
            len(data),
            0,
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,
        )
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def mkdir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name.strip("/"), stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name.strip("/"), stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(
    recipe: Recipe,
    tools: Path,
    kernel_release: str,
    modules_root: Path,
    modules: list[str],
    fs: str,
    epoch: int,
) -> bytes:
    """The gzip-compressed initramfs."""
    c = Cpio(epoch)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "dev", "proc", "sys", "run", "newroot", "etc"):
        c.mkdir(d)
    for name in ("bin", "sbin", "lib"):
        c.symlink(name, f"usr/{name}")
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    busybox = tools / "usr/bin/busybox"
    if not busybox.exists():
        raise DistbuildError("busybox-static did not provide usr/bin/busybox")
    c.file("usr/bin/busybox", busybox.read_bytes(), 0o755)
    files = with_libraries(tools, "usr/sbin/dmsetup")
    if any(p.startswith("usr/lib64/") for p in files):
        c.mkdir("usr/lib64")
        c.symlink("lib64", "usr/lib64")
    for rel, data in sorted(files.items()):
        c.file(rel, data, 0o755)
    for rel in modules:
        c.file(f"usr/lib/modules/{kernel_release}/{rel}", (modules_root / rel).read_bytes())
    conf = (
        f"KERNEL={kernel_release}\n"
        f"FS={fs}\n"
        f"MODULES='{' '.join(modules)}'\n"
        f"CONSOLE={recipe.console}\n"
    )
    c.file("etc/distbuild/initramfs.conf", conf.encode())
    c.file("init", INIT.encode(), 0o755)
    raw = c.finish()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


__all__ = ["INIT_MODULES", "Cpio", "build_initramfs", "elf_needs", "with_libraries"]
