"""The ``root`` output: the A/B update payload of one arch.

- ``root.img``: the rootfs as a compressed read-only file system (squashfs
  with zstd by default; erofs with lz4hc as an alternative, see README), the
  dm-verity hash tree appended after its last data block (no superblock), so
  one partition holds both.
- ``linux`` and ``initrd``: the locked kernel and the initramfs of
  :mod:`distbuild.disk.initramfs`.
- ``boot.json``: version, root hash, salt, block count, and the kernel
  command line (without ``distbuild.slot=``, which boot control adds).

The root tree is the image's rootfs (hard-linked, not copied) plus the
trimmed kernel modules and the boot control code the health check runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from distbuild.context import ArchBuild
from distbuild.core import ui
from distbuild.core.bootctl.base import SlotBoot
from distbuild.core.errors import DistbuildError
from distbuild.core.run import run, which
from distbuild.disk import trees
from distbuild.disk.initramfs import INIT_MODULES, build_initramfs
from distbuild.disk.modules import ModuleIndex
from distbuild.node.provision_apply import BAKED as BAKED_PROVISION
from distbuild.rootfs.install_updater import VENDOR_DIR, UpdaterSetup, install_updater
from distbuild.rootfs.rootpath import RootDir

BLOCK = 4096
# Modules the running node loads on demand besides the initramfs ones: the
# code pages of the FAT boot partition, and what containerd's default
# snapshotter and bridge networking ask for.
RUNTIME_MODULES = ("nls_cp437", "nls_ascii", "nls_utf8", "bridge", "veth", "br_netfilter")


@dataclass(frozen=True)
class Verity:
    roothash: str
    salt: str
    data_blocks: int

    @property
    def hash_offset(self) -> int:
        return self.data_blocks * BLOCK


@dataclass(frozen=True)
class RootPayload:
    """One arch's root output, in a work directory."""

    version: str
    arch: str
    fs: str
    image: Path
    kernel: Path
    initrd: Path
    verity: Verity
    cmdline: str
    tree_bytes: int  # the unpacked root tree, for size comparisons

    def boot(self) -> SlotBoot:
        return SlotBoot(
            self.version, self.kernel.read_bytes(), self.initrd.read_bytes(), self.cmdline
        )

    def meta(self) -> dict[str, object]:
        return {
            "version": self.version,
            "arch": self.arch,
            "fs": self.fs,
            "root": self.image.name,
            "kernel": self.kernel.name,
            "initrd": self.initrd.name,
            "cmdline": self.cmdline,
            "verity": {**asdict(self.verity), "hash_offset": self.verity.hash_offset},
            "tree_bytes": self.tree_bytes,
        }


def root_payload(ctx: ArchBuild) -> RootPayload:
    """The arch's root payload, built once per build (root and disk share it)."""
    return ctx.once(RootPayload, lambda: build_payload(ctx))


def build_payload(ctx: ArchBuild) -> RootPayload:
    """Build the root payload into ``<workdir>/root-<arch>``: image, kernel, initrd, boot.json."""
    recipe, fs = ctx.recipe, ctx.options.root_fs
    kernel = trees.kernel_tree(ctx)
    tools = trees.boot_tools(ctx)
    index = ModuleIndex.load(kernel.modules)
    where = str(recipe.path)
    init_modules = index.load_order([*recipe.initramfs_modules, *INIT_MODULES], where=where)
    node_modules = index.load_order(
        [*recipe.initramfs_modules, *INIT_MODULES, *RUNTIME_MODULES], where=where
    )
    out = ctx.workdir / f"root-{ctx.arch.name}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    image = out / "root.img"
    tree_bytes = write_root_image(ctx, kernel, index, node_modules, image)
    verity = add_verity(image)
    kernel_out = out / "linux"
    shutil.copyfile(kernel.image, kernel_out)
    initrd = out / "initrd"
    initrd.write_bytes(
        build_initramfs(recipe, tools, kernel.version, kernel.modules, init_modules, fs, ctx.epoch)
    )
    cmdline = kernel_cmdline(recipe.console, ctx.version, verity)
    payload = RootPayload(
        ctx.version, ctx.arch.name, fs, image, kernel_out, initrd, verity, cmdline, tree_bytes
    )
    (out / "boot.json").write_text(json.dumps(payload.meta(), indent=2, sort_keys=True) + "\n")
    return payload


def write_root_image(
    ctx: ArchBuild, kernel: trees.KernelTree, index: ModuleIndex, modules: list[str], image: Path
) -> int:
    """The root tree (the rootfs, ``modules``, the updater) written as ``image``; its size."""
    tree = ctx.workdir / f"root-tree-{ctx.arch.name}"
    if tree.exists():
        shutil.rmtree(tree)
    rootfs = ctx.rootfs()
    ui.note(f"{ctx.arch.name}: assembling the root tree ({len(modules)} kernel modules)")
    # Hard links: the rootfs stays as the OCI layer saw it; the tree only
    # gains files.
    run(["cp", "-al", rootfs, tree])
    try:
        index.copy(modules, RootDir(tree), f"usr/lib/modules/{kernel.version}")
        trees.depmod(tree, kernel.version)
        # The updater and the boot control code the health check runs.
        _install_updater(tree, ctx.options.updater)
        if ctx.options.provision is not None:  # checked by distbuild.disk.provision
            RootDir(tree).write_file(BAKED_PROVISION, ctx.options.provision, 0o644)
        compile_python(tree)
        tree_bytes = _tree_bytes(tree)
        ui.note(f"{ctx.arch.name}: writing the {ctx.options.root_fs} root image")
        make_fs(ctx.options.root_fs, tree, image, ctx.epoch)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return tree_bytes


def _install_updater(tree: Path, setup: UpdaterSetup | None) -> None:
    if setup is None:
        install_updater(tree)
    else:
        install_updater(
            tree,
            channel_url=setup.channel_url,
            channel=setup.channel,
            root_json=setup.trust_root,
            config=setup.settings,
        )


def kernel_cmdline(console: str, version: str, verity: Verity) -> str:
    """The kernel command line of a slot, without ``distbuild.slot=`` (boot control adds it)."""
    return " ".join(
        [
            f"console={console}",
            f"distbuild.version={version}",
            f"distbuild.verity={verity.roothash}",
            f"distbuild.verity_salt={verity.salt}",
            f"distbuild.verity_blocks={verity.data_blocks}",
            "rootwait",
            "panic=5",
            "loglevel=4",
        ]
    )


def compile_python(tree: Path) -> None:
    """Byte-compile the image's Python, as Debian's py3compile would on install.

    Maintainer scripts never run, so without this every boot compiles the
    standard library from source: seconds under emulation, on every boot,
    and nowhere to cache it on a read-only root. Bytecode depends on the
    Python version only, so the host's interpreter compiles it when its
    version is the image's; ``unchecked-hash`` pycs hold no timestamps.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    root = RootDir(tree)
    wanted = [f"usr/lib/{version}", "usr/lib/python3/dist-packages", VENDOR_DIR]
    found = [root.lstat(d, follow=True) for d in wanted]
    if not (found[0] and stat.S_ISDIR(found[0].st_mode)):
        if any((tree / "usr/lib").glob("python3.*")):
            ui.note(f"not byte-compiling the image's Python: it is not {version} like this host's")
        return
    # compileall follows links the host's way: only directories that resolve
    # the same on the host, and no .py link that leaves the tree.
    dirs = [
        root.host_path(d)
        for d, st in zip(wanted, found, strict=True)
        if st and stat.S_ISDIR(st.st_mode)
    ]
    outside = _links_out(tree, dirs)
    exclude = ["-x", "^(" + "|".join(re.escape(str(p)) for p in outside) + ")$"] if outside else []
    proc = run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            tree,
            "-p",
            "/",
            *exclude,
            *dirs,
        ],
        env={"PYTHONHASHSEED": "0"},
        check=False,
        capture=True,
    )
    if proc.returncode != 0:
        # A few test and template files are not valid Python 3; they stay source.
        ui.debug(proc.stdout.decode(errors="replace")[-2000:])


def _links_out(tree: Path, dirs: list[Path]) -> list[Path]:
    """The .py symlinks under ``dirs`` that the host would resolve outside ``tree``.

    A symlinked ``__pycache__`` is refused: compileall would write through it.
    """
    real = os.path.realpath(tree) + "/"
    out = []
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top):
            if "__pycache__" in dirnames and os.path.islink(os.path.join(dirpath, "__pycache__")):
                rel = os.path.relpath(os.path.join(dirpath, "__pycache__"), tree)
                raise DistbuildError(
                    f"/{rel} is a symlink: byte-compiling would write through it",
                    hint="drop that link from the image definition (symlinks:, overlay:)",
                )
            for name in filenames:
                path = Path(dirpath, name)
                outside = not os.path.realpath(path).startswith(real)
                if name.endswith(".py") and path.is_symlink() and outside:
                    out.append(path)
    return out


def _tree_bytes(tree: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(tree):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def make_fs(fs: str, tree: Path, image: Path, epoch: int) -> None:
    """A read-only compressed file system of ``tree``, reproducibly."""
    if fs == "squashfs":
        run(
            [
                which("mksquashfs", "squashfs-tools"),
                tree,
                image,
                "-noappend",
                "-comp",
                "zstd",
                "-Xcompression-level",
                "6",
                "-b",
                "256K",
                "-mkfs-time",
                str(epoch),
                "-all-time",
                str(epoch),
                "-reproducible",
                "-quiet",
                "-no-progress",
            ]
        )
    else:
        run(
            [
                which("mkfs.erofs", "erofs-utils"),
                "-zlz4hc,12",
                "-C65536",
                f"-T{epoch}",
                "-U",
                "00000000-0000-0000-0000-000000000000",
                "--quiet",
                image,
                tree,
            ]
        )
    size = image.stat().st_size
    if size % BLOCK:
        with image.open("ab") as f:
            f.write(b"\0" * (BLOCK - size % BLOCK))


def add_verity(image: Path) -> Verity:
    """Append a dm-verity hash tree to ``image``; the salt is derived from its bytes."""
    h = hashlib.sha256()
    with image.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    salt = h.hexdigest()
    blocks = image.stat().st_size // BLOCK
    out = run(
        [
            which("veritysetup", "cryptsetup-bin"),
            "format",
            image,
            image,
            f"--hash-offset={blocks * BLOCK}",
            f"--data-blocks={blocks}",
            "--no-superblock",
            f"--salt={salt}",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ],
        capture=True,
    )
    for line in out.stdout.decode().splitlines():
        if line.startswith("Root hash:"):
            return Verity(line.split(":", 1)[1].strip(), salt, blocks)
    raise DistbuildError("veritysetup printed no root hash")


def verify(image: Path, verity: Verity) -> bool:
    """Whether every data block of ``image`` matches its hash tree (no root needed)."""
    proc = run(
        [
            which("veritysetup", "cryptsetup-bin"),
            "verify",
            image,
            image,
            verity.roothash,
            f"--hash-offset={verity.hash_offset}",
            f"--data-blocks={verity.data_blocks}",
            "--no-superblock",
            f"--salt={verity.salt}",
        ],
        check=False,
    )
    return proc.returncode == 0
