"""``distbuild boot`` and ``distbuild disk …``: try disk images, change their slots."""

from __future__ import annotations

import stat
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from distbuild.cli import options
from distbuild.cli.common import State, pass_state
from distbuild.cli.options import arch_option, json_option, print_json
from distbuild.core import names
from distbuild.core.arch import get_arch
from distbuild.core.bootctl.base import BootControl
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.disk.slots import disk_bootctl, payload_from_build, write_slot
from distbuild.model.board import DEFAULT_BOARD
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import boot_disk
from distbuild.record import RECORD, load_record

if TYPE_CHECKING:
    from distbuild.disk.flashsrc import Source, Wanted

one_arch_option = arch_option()
slot_option = click.option(
    "--slot", type=click.Choice(["a", "b"]), required=True, help="The root slot."
)


def _disk_file(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    # A FIFO would block the first read forever, a character device never end.
    mode = value.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise click.BadParameter(f"{value} is not a disk image file or a block device", ctx, param)
    return value


disk_argument = click.argument(
    "disk", type=click.Path(exists=True, dir_okay=False, path_type=Path), callback=_disk_file
)


def _recipe(state: State, arch: str | None) -> Recipe:
    if not arch:
        raise UsageError("no architecture given", hint="pass --arch amd64, arm64 or armv7")
    return load_recipe(state.project, get_arch(arch))


def _find_disk(target: Path, arch: str | None, board: str) -> tuple[Path, str | None]:
    """A disk image path and its arch, from a raw image or a build (directory or build.json).

    In a build, the disk of ``board`` (older builds' disks have no board: they
    are qemu's).
    """
    if target.is_file() and target.name != RECORD:
        return target, arch
    record, base = load_record(target)
    disks = [d for d in record.find("disk", arch) if (d.board or DEFAULT_BOARD) == board]
    if not disks:
        have = ", ".join(f"{a.arch}/{a.board or DEFAULT_BOARD}" for a in record.find("disk"))
        raise DistbuildError(
            f"the build {base} has no disk image for board {board}"
            + (f" on {arch}" if arch else ""),
            hint=f"disk images in it (arch/board): {have or 'none'}; "
            "build the image with the 'disk' output and --board",
        )
    if len(disks) > 1:
        raise UsageError(
            f"the build {base} has {board} disk images for several arches",
            hint="pass --arch " + " or ".join(d.arch for d in disks),
        )
    return base / disks[0].path, disks[0].arch


@click.command("boot")
@click.argument("target", metavar="IMAGE_OR_BUILD", type=click.Path(exists=True, path_type=Path))
@one_arch_option
@click.option(
    "--board",
    type=options.BOARD,
    default=DEFAULT_BOARD,
    show_default=True,
    help="In a build: the board whose disk to boot (qemu, or a board qemu emulates).",
)
@click.option("--timeout", type=options.SECONDS, default=300, show_default=True, help="Seconds.")
@click.option(
    "--expect",
    "expect",
    multiple=True,
    help="Exit 0 once the console printed this (repeat: all, in order).",
)
@click.option("--write", is_flag=True, help="Write to the image instead of a throwaway overlay.")
@click.option("--memory", type=options.MEMORY, help="Guest memory in MiB (default: the recipe's).")
@pass_state
def boot_cmd(
    state: State,
    target: Path,
    arch: str | None,
    timeout: float,
    expect: tuple[str, ...],
    write: bool,
    memory: int | None,
    board: str,
) -> None:
    """Boot a disk image (or a build's) in qemu under TCG; the serial console is stdout."""
    disk, arch = _find_disk(target, arch, board)
    recipe = _recipe(state, arch)
    if memory is not None:
        from dataclasses import replace

        recipe = replace(recipe, qemu_memory=memory)
    machine = None if board == DEFAULT_BOARD else board
    result = boot_disk(
        recipe, disk, timeout=timeout, expect=expect, write=write, echo=sys.stdout, board=machine
    )
    for text, seconds in result.seen:
        click.echo(f"\ndistbuild: saw {text!r} after {seconds:.1f}s", err=True)


@click.group("disk")
def disk_group() -> None:
    """Inspect and change the A/B state of a disk image (offline)."""


def _state(bc: BootControl) -> dict[str, object]:
    return {"order": bc.boot_order(), "slots": {s: asdict(st) for s, st in bc.states().items()}}


def _state_text(bc: BootControl) -> str:
    lines = [f"boot order: {' '.join(bc.boot_order()) or '-'}"]
    for name, st in sorted(bc.states().items()):
        flags = "good" if st.good else f"{st.tries_left} tries left"
        if not st.bootable:
            flags = "not bootable"
        lines.append(f"slot {name}:     {st.version or '-'} ({flags})")
    return "\n".join(lines)


def _report(bc: BootControl, as_json: bool, done: str) -> None:
    """What a disk command did: the slots' new state as JSON, or one line."""
    if as_json:
        print_json(_state(bc))
    else:
        click.echo(done)


@disk_group.command("status")
@disk_argument
@one_arch_option
@json_option
@pass_state
def status_cmd(state: State, disk: Path, arch: str | None, as_json: bool) -> None:
    """Print both slots' states and the boot order."""
    bc = disk_bootctl(disk, _recipe(state, arch))
    if as_json:
        print_json(_state(bc))
    else:
        click.echo(_state_text(bc))


@disk_group.command("write-slot")
@disk_argument
@click.argument("build", type=click.Path(exists=True, path_type=Path))
@one_arch_option
@slot_option
@json_option
@pass_state
def write_slot_cmd(
    state: State, disk: Path, build: Path, arch: str | None, slot: str, as_json: bool
) -> None:
    """Write a build's root output into a slot, verified, and leave it unbootable."""
    recipe = _recipe(state, arch)
    payload = payload_from_build(build, recipe.arch.name)
    write_slot(disk, recipe, payload, slot)
    if as_json:
        print_json({"slot": slot, "version": payload.version, "bootable": False})
    else:
        click.echo(
            f"slot {slot}: wrote {payload.version}; enable it with 'distbuild disk set-slot'"
        )


@disk_group.command("set-slot")
@disk_argument
@one_arch_option
@slot_option
@click.option(
    "--tries", type=options.TRIES, default=None, help="Tries before falling back (default: recipe)."
)
@json_option
@pass_state
def set_slot_cmd(
    state: State, disk: Path, arch: str | None, slot: str, tries: int | None, as_json: bool
) -> None:
    """Boot a slot next, on trial."""
    recipe = _recipe(state, arch)
    count = recipe.boot_tries if tries is None else tries
    bc = disk_bootctl(disk, recipe)
    bc.set_next(slot, count)
    _report(bc, as_json, f"slot {slot}: boots next, on trial ({count} tries)")


@disk_group.command("mark-good")
@disk_argument
@one_arch_option
@slot_option
@json_option
@pass_state
def mark_good_cmd(state: State, disk: Path, arch: str | None, slot: str, as_json: bool) -> None:
    """Bless a slot."""
    bc = disk_bootctl(disk, _recipe(state, arch))
    bc.mark_good(slot)
    _report(bc, as_json, f"slot {slot}: good")


@disk_group.command("mark-unbootable")
@disk_argument
@one_arch_option
@slot_option
@json_option
@pass_state
def mark_unbootable_cmd(
    state: State, disk: Path, arch: str | None, slot: str, as_json: bool
) -> None:
    """Never boot a slot (until it is set again)."""
    bc = disk_bootctl(disk, _recipe(state, arch))
    bc.mark_unbootable(slot)
    _report(bc, as_json, f"slot {slot}: not bootable")


@disk_group.command("provision")
@disk_argument
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def provision_cmd(disk: Path, file: Path, as_json: bool) -> None:
    """Check a provisioning FILE and write it onto the disk's boot partition."""
    from distbuild.disk.provision import write_provision

    name = write_provision(disk, file)
    if as_json:
        print_json({"disk": str(disk), "file": str(file), "written": name})
    else:
        click.echo(f"{disk}: wrote {file} as {name} on the boot partition; read on the next boot")


@dataclass(frozen=True)
class _Where:
    """Where a channel is: its trust root (for a URL) or the local repository (for a name)."""

    trust_root: Path | None
    repo: Path | None


def _flash_source(
    stack: ExitStack, source: str, where: _Where, bmap_file: Path | None, wanted: Wanted
) -> Source:
    """SOURCE as a channel URL, a build (directory or build.json), a disk image file, or a
    channel name in --repo."""
    from distbuild.disk.flashsrc import from_build, from_channel, from_image, from_repo, is_build

    trust_root = where.trust_root

    if "://" in source:
        if trust_root is None:
            raise UsageError(
                "flashing from a channel needs the channel's trust root",
                hint="pass --trust-root with the channel's first root.json "
                "(metadata/1.root.json), obtained from its publisher out of band",
            )
        if not trust_root.is_file():
            raise UsageError(f"--trust-root: {trust_root} is not a file")
        return stack.enter_context(from_channel(source, trust_root, wanted))
    path = Path(source)
    if not path.exists() and where.repo is not None:
        channel = names.check_name(source, names.CHANNEL, where="SOURCE")
        return stack.enter_context(from_repo(where.repo, channel, wanted))
    if not path.exists():
        raise UsageError(
            f"{source} is neither a file, a build nor a channel URL",
            hint="pass a build directory, a disk image, https://host/path/<channel>, "
            "or a channel name with --repo",
        )
    if is_build(path):
        return from_build(path, wanted)
    if not path.is_file():  # a FIFO would block the first read, a device never end
        raise UsageError(f"{source} is not a disk image file")
    return from_image(path, bmap_file)


@click.command("flash")
@click.argument("source", metavar="BUILD|IMAGE|CHANNEL_URL|CHANNEL")
@click.option(
    "--device",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The card: a whole block device (/dev/sdX, /dev/mmcblkN), or a file to write.",
)
@click.option("--board", type=options.BOARD, help="The board whose disk image to write.")
@one_arch_option
@click.option("--image", "image", type=options.IMAGE, help="From a channel: the image.")
@click.option(
    "--release",
    "version",
    type=options.VERSION,
    metavar="VERSION",
    help="From a channel: the release (default: the newest with a disk for the board).",
)
@click.option(
    "--trust-root",
    type=click.Path(dir_okay=False, path_type=Path),
    help="From a channel: its root metadata (metadata/1.root.json), the trust anchor.",
)
@click.option(
    "--bmap",
    "bmap_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A disk image file's bmap (default: IMAGE.bmap beside it; none: every byte).",
)
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DISTBUILD_REPO",
    help="Repository root: one directory per channel. Env: DISTBUILD_REPO.",
)
@click.option("--force", is_flag=True, help="Write over a device that holds partitions.")
@click.option(
    "--provision",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A provisioning file, checked first, then written onto the boot partition.",
)
@json_option
def flash_cmd(
    source: str,
    device: Path,
    board: str | None,
    arch: str | None,
    image: str | None,
    version: str | None,
    trust_root: Path | None,
    bmap_file: Path | None,
    repo: Path | None,
    force: bool,
    provision: Path | None,
    as_json: bool,
) -> None:
    """Write a board's disk image onto a card: from a build, an image file or a channel.

    Only the image's mapped blocks are written (its bmap), each read back and
    checked. A mounted device, one smaller than the image, or one holding
    partitions (without --force) is refused.
    """
    from distbuild.disk.flash import flash
    from distbuild.disk.flashsrc import Wanted

    wanted = Wanted(board=board, arch=arch, image=image, release=version)
    with ExitStack() as stack:
        src = _flash_source(stack, source, _Where(trust_root, repo), bmap_file, wanted)
        done = flash(src, device, force=force, provision=provision)
    if as_json:
        print_json(asdict(done))
    else:
        extra = f", {provision} as {done.provision} on its boot partition" if provision else ""
        click.echo(
            f"{device}: wrote {done.source} ({done.written} of {done.bytes} bytes, "
            f"every written block read back and checked){extra}"
        )


COMMANDS = [boot_cmd, disk_group, flash_cmd]
