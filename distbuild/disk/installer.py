"""The installer initramfs: the node's own initramfs plus its root image and a different /init.

A network boot runs the installer (:mod:`distbuild.node.netinstall`) with the
node's Python, its vendored TUF client and the channel's trust root baked into
the node's root image, so the installer is the node's updater code, not a
second program. The initramfs is two concatenated cpio archives (the kernel
unpacks them in order, a later file replacing an earlier one):

1. the node's initramfs of :mod:`distbuild.disk.initramfs` (busybox, the
   recipe's drivers: virtio, the file systems, ``initramfs.conf``);
2. an uncompressed archive (the root image is compressed already) with
   ``/root.img`` (the slot payload, its verity tree ignored), the ``loop``
   module, and the installer's ``/init``: it loop-mounts the image read-only,
   puts tmpfs overlays on its /etc and /var, and runs the installer
   (``python3 -m distbuild.node.netinstall``, the same as ``distbuild-update
   install-disk``) inside it; on success it reboots. A refusal (the
   reason on the console, the disk untouched) is tried again every few
   seconds for some minutes (a mended channel or disk is picked up), then
   /init stops.
"""

from __future__ import annotations

from pathlib import Path

from distbuild.context import ArchBuild
from distbuild.disk import trees
from distbuild.disk.initramfs import INIT, Cpio
from distbuild.disk.modules import ModuleIndex
from distbuild.disk.rootimg import root_payload
from distbuild.rootfs.install_updater import VENDOR_DIR

ROOT_IMAGE = "root.img"
INSTALLER_MODULES = ("loop",)

# The node's /init's first lines: PATH, busybox's links, /proc /sys /dev, its initramfs.conf.
_PROLOG = INIT[
    INIT.index("export PATH=") : INIT.index("initramfs.conf\n") + len("initramfs.conf\n")
]

INSTALLER_INIT = (
    "#!/usr/bin/busybox sh\n"
    "# distbuild installer: mount the node's root image, install a disk from the channel in it.\n"
    + _PROLOG
    + r""". /etc/distbuild/installer.conf

stop() {
    echo "distbuild-install: stopped: $*"
    echo "distbuild-install: boot from the network again to retry"
    while :; do sleep 3600; done
}

echo "distbuild-install: installer started ($(cut -d' ' -f1 /proc/uptime) s after power-on)"
for m in $MODULES $INSTALLER_MODULES; do
    insmod "/usr/lib/modules/$KERNEL/$m" 2>/dev/null  # built in, or a CPU variant that does not load
done
mount -t "$FS" -o ro,loop /root.img /newroot || stop "cannot mount the node's root image ($FS)"
mkdir -p /rw
mount -t tmpfs -o mode=0755 tmpfs /rw
for d in etc var; do
    mkdir -p "/rw/$d/upper" "/rw/$d/work"
    mount -t overlay overlay -o "lowerdir=/newroot/$d,upperdir=/rw/$d/upper,workdir=/rw/$d/work" \
        "/newroot/$d" || stop "cannot mount a writable /$d"
done
for d in run tmp; do
    mount -t tmpfs -o mode=0755 tmpfs "/newroot/$d" || stop "cannot mount /$d"
done
for d in dev proc sys; do
    mount -o bind "/$d" "/newroot/$d"
done
# The installer module alone (not the updater's CLI): seconds less of imports under TCG.
if chroot /newroot /usr/bin/env PYTHONPATH=/@VENDOR@ /usr/bin/python3 -m distbuild.node.netinstall; then
    sync
    echo "distbuild-install: rebooting into the installed disk"
    reboot -f
fi
stop "the install did not finish (the reason is above)"
"""
)


def installer_modules(ctx: ArchBuild) -> tuple[str, list[str]]:
    """The kernel release and the module paths (relative to its module dir) /init adds."""
    kernel = trees.kernel_tree(ctx)
    index = ModuleIndex.load(kernel.modules)
    return kernel.version, index.load_order(list(INSTALLER_MODULES), where="installer")


def installer_archive(
    root_image: Path, modules_root: Path, kernel_release: str, modules: list[str], epoch: int
) -> bytes:
    """The second (uncompressed) cpio archive: the root image, modules, /init."""
    c = Cpio(epoch)
    c.file(ROOT_IMAGE, root_image.read_bytes())
    for rel in modules:
        c.file(f"usr/lib/modules/{kernel_release}/{rel}", (modules_root / rel).read_bytes())
    conf = f"INSTALLER_MODULES='{' '.join(modules)}'\n"
    c.file("etc/distbuild/installer.conf", conf.encode())
    init = INSTALLER_INIT.replace("@VENDOR@", VENDOR_DIR.strip("/"))
    c.file("init", init.encode(), 0o755)
    return c.finish()


# The kernel takes an uncompressed cpio that follows another archive only at an
# offset that is a multiple of 4 (init/initramfs.c: ``!(this_header & 3)``);
# elsewhere its "070701" is read as an unknown compression and the archive is
# dropped ("invalid magic at start of compressed archive"). Zeros between
# archives are skipped; 512 keeps each archive sector-aligned as well.
ARCHIVE_ALIGN = 512


def concatenate(*archives: bytes) -> bytes:
    """``archives`` as one initramfs: each one starts at a multiple of :data:`ARCHIVE_ALIGN`."""
    out = bytearray()
    for archive in archives:
        out += bytes(-len(out) % ARCHIVE_ALIGN)
        out += archive
    return bytes(out)


def installer_initramfs(ctx: ArchBuild) -> Path:
    """The installer initramfs of ``ctx``'s arch (built once per build), in its work directory."""

    def build() -> InstallerInitramfs:
        payload = root_payload(ctx)
        release, modules = installer_modules(ctx)
        kernel = trees.kernel_tree(ctx)
        out = ctx.workdir / f"installer-{ctx.arch.name}" / "initrd"
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = installer_archive(payload.image, kernel.modules, release, modules, ctx.epoch)
        out.write_bytes(concatenate(payload.initrd.read_bytes(), extra))
        return InstallerInitramfs(out)

    return ctx.once(InstallerInitramfs, build).path


class InstallerInitramfs:
    """The built file (a type of its own, so :meth:`ArchBuild.once` keeps it per build)."""

    def __init__(self, path: Path) -> None:
        self.path = path


__all__ = ["INSTALLER_INIT", "installer_archive", "installer_initramfs"]
