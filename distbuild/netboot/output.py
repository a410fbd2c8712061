"""The ``netboot`` output: what a machine boots from the network to install a node.

Per arch, in a build (kinds in build.json; ``<board>`` for each board built (``--board``)):

- UEFI arches (amd64, arm64): ``<arch>/netboot/<board>/installer.efi``
  (kind ``netboot-uki``): systemd's EFI stub from the boot lock with the
  locked kernel, the installer initramfs and a command line naming the
  channel URL, channel, image and board.
- U-Boot arches (armv7): ``<arch>/netboot/linux`` (``netboot-kernel``),
  ``<arch>/netboot/initrd`` (``netboot-initrd``) and
  ``<arch>/netboot/<board>/boot.scr.uimg`` (``netboot-script``): a U-Boot
  script that TFTPs the two (by their paths in the build, which is how
  ``distbuild netboot`` lays out a TFTP root) and ``bootz``es them.

The channel comes from ``distbuild image --channel-url … --channel …`` (the
same values a node image bakes into its update.yaml).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from distbuild.bootchain.uboot import script_image
from distbuild.context import ArchBuild, BuildDir, BuildOptions
from distbuild.core.errors import DistbuildError
from distbuild.disk import trees
from distbuild.disk.installer import installer_initramfs
from distbuild.model.board import Board
from distbuild.model.image import ImageDef
from distbuild.netboot.uki import build_uki, check_url, installer_cmdline, os_release
from distbuild.record import Artifact
from distbuild.rootfs.install_updater import UpdaterSetup

NETBOOT_DIR = "netboot"
UKI = "installer.efi"
KERNEL = "linux"
INITRD = "initrd"
SCRIPT = "boot.scr.uimg"  # the name U-Boot's distro boot asks DHCP/TFTP for


def check_options(opts: BuildOptions, image: ImageDef) -> None:
    """At plan: the installer needs to know its channel (refused before anything is fetched)."""
    if opts.updater is None:
        raise DistbuildError(
            f"the netboot output of {image.name} needs the channel the installer installs from",
            hint="add --channel-url URL --channel NAME --trust-root ROOT.json to 'distbuild image'",
        )
    check_url(opts.updater.channel_url)  # it goes on a kernel command line


def board_cmdline(
    updater: UpdaterSetup, image: str, board: Board, consoles: tuple[str, ...]
) -> str:
    """The installer's command line on ``board``: its channel, image, board and
    consoles, then the board's own arguments (checked when the board was loaded)."""
    words = installer_cmdline(updater.channel_url, updater.channel, image, board.name, consoles)
    return " ".join((words, *board.kernel_args))


def installer_initrd(ctx: ArchBuild) -> bytes:
    """The installer initramfs (:mod:`distbuild.disk.installer`): the node's initramfs with
    the node's root image, whose /init runs the network installer."""
    return installer_initramfs(ctx).read_bytes()


def build_netboot(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    opts = ctx.options
    check_options(opts, ctx.image)
    assert opts.updater is not None
    tree = trees.kernel_tree(ctx)
    kernel = tree.image.read_bytes()
    initrd = installer_initrd(ctx)
    base = out.path / ctx.arch.name / NETBOOT_DIR
    arch = ctx.arch.name

    updater = opts.updater
    artifacts = []
    if ctx.recipe.arch.efi_arch is not None:
        stub = _stub(ctx)
        osrel = os_release(ctx.image.name, ctx.version)
        for board in ctx.boards:
            console = board.console or ctx.recipe.console
            cmdline = board_cmdline(updater, ctx.image.name, board, ("tty0", console))
            uki = build_uki(stub, arch, kernel, initrd, cmdline, osrel)
            path = _write(base / board.name / UKI, uki)
            artifacts.append(out.artifact(arch, "netboot-uki", path, board.name))
        return artifacts
    artifacts += [
        out.artifact(arch, "netboot-kernel", _write(base / KERNEL, kernel)),
        out.artifact(arch, "netboot-initrd", _write(base / INITRD, initrd)),
    ]
    rel = PurePosixPath(arch, NETBOOT_DIR)
    for board in ctx.boards:
        console = board.console or ctx.recipe.console
        cmdline = board_cmdline(updater, ctx.image.name, board, (console,))
        text = uboot_script(cmdline, str(rel / KERNEL), str(rel / INITRD))
        path = _write(base / board.name / SCRIPT, script_image(text, "distbuild network install"))
        artifacts.append(out.artifact(arch, "netboot-script", path, board.name))
    return artifacts


def _stub(ctx: ArchBuild) -> bytes:
    efi = ctx.recipe.arch.efi_arch
    stub = trees.boot_tools(ctx) / f"usr/lib/systemd/boot/efi/linux{efi}.efi.stub"
    if not stub.is_file():
        raise DistbuildError(
            f"systemd-boot-efi for {ctx.arch.debian} has no {stub.name}",
            hint=f"check the boot lock (images/{ctx.image.name}-boot.{ctx.arch.name}.lock.json)",
        )
    return stub.read_bytes()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def uboot_script(cmdline: str, kernel: str, initrd: str) -> str:
    """A U-Boot script that TFTPs kernel and initramfs from its server and boots them.

    ``cmdline`` and the paths are checked by the caller (no quotes or spaces in
    a path, none of U-Boot's ``"$;`` in the command line's words).
    """
    for value in (cmdline, kernel, initrd):
        if any(c in value for c in '"$;\\\n\r\0') or not value.isascii():
            raise DistbuildError(f"{value!r} cannot go into a U-Boot script")
    return "\n".join(
        [
            'echo "distbuild: network install"',
            f'setenv bootargs "{cmdline}"',
            f"tftpboot ${{kernel_addr_r}} {kernel} || reset",
            f"tftpboot ${{ramdisk_addr_r}} {initrd} || reset",
            "bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}",
            'echo "distbuild: the network install did not boot; resetting"',
            "reset",
            "",
        ]
    )
