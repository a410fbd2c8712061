"""``distbuild boot`` and ``distbuild disk …``: try disk images, change their slots."""

from __future__ import annotations

import stat
import sys
from dataclasses import asdict
from pathlib import Path

import click

from distbuild.arch import get_arch
from distbuild.boot import boot_disk
from distbuild.cli import options
from distbuild.cli.common import State, pass_state, print_json
from distbuild.disk.slots import disk_bootctl, payload_from_build, write_slot
from distbuild.errors import DistbuildError, UsageError
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.record import RECORD, load_record

arch_option = click.option("--arch", "arch", type=options.ARCH, help="amd64, arm64 or armv7.")
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


def _find_disk(target: Path, arch: str | None) -> tuple[Path, str | None]:
    """A disk image path and its arch, from a raw image or a build (directory or build.json)."""
    if target.is_file() and target.name != RECORD:
        return target, arch
    record, base = load_record(target)
    disks = record.find("disk", arch)
    if not disks:
        have = ", ".join(a.arch for a in record.find("disk")) or "none"
        raise DistbuildError(
            f"the build {base} has no disk image" + (f" for {arch}" if arch else ""),
            hint=f"disk images in it: {have}; build the image with the 'disk' output",
        )
    if len(disks) > 1:
        raise UsageError(
            f"the build {base} has disk images for several arches",
            hint="pass --arch " + " or ".join(d.arch for d in disks),
        )
    return base / disks[0].path, disks[0].arch


@click.command("boot")
@click.argument("target", metavar="IMAGE_OR_BUILD", type=click.Path(exists=True, path_type=Path))
@arch_option
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
) -> None:
    """Boot a disk image (or a build's) in qemu under TCG; the serial console is stdout."""
    disk, arch = _find_disk(target, arch)
    recipe = _recipe(state, arch)
    if memory:
        from dataclasses import replace

        recipe = replace(recipe, qemu_memory=memory)
    result = boot_disk(recipe, disk, timeout=timeout, expect=expect, write=write, echo=sys.stdout)
    for text, seconds in result.seen:
        click.echo(f"\ndistbuild: saw {text!r} after {seconds:.1f}s", err=True)


@click.group("disk")
def disk_group() -> None:
    """Inspect and change the A/B state of a disk image (offline)."""


@disk_group.command("status")
@disk_argument
@arch_option
@pass_state
def status_cmd(state: State, disk: Path, arch: str | None) -> None:
    """Print both slots' states and the boot order as JSON."""
    bc = disk_bootctl(disk, _recipe(state, arch))
    print_json(
        {"order": bc.boot_order(), "slots": {s: asdict(st) for s, st in bc.states().items()}}
    )


@disk_group.command("write-slot")
@disk_argument
@click.argument("build", type=click.Path(exists=True, path_type=Path))
@arch_option
@slot_option
@pass_state
def write_slot_cmd(state: State, disk: Path, build: Path, arch: str | None, slot: str) -> None:
    """Write a build's root output into a slot, verified, and leave it unbootable."""
    recipe = _recipe(state, arch)
    payload = payload_from_build(build, recipe.arch.name)
    write_slot(disk, recipe, payload, slot)
    click.echo(f"slot {slot}: wrote {payload.version}; enable it with 'distbuild disk set-slot'")


@disk_group.command("set-slot")
@disk_argument
@arch_option
@slot_option
@click.option(
    "--tries", type=options.TRIES, default=None, help="Tries before falling back (default: recipe)."
)
@pass_state
def set_slot_cmd(state: State, disk: Path, arch: str | None, slot: str, tries: int | None) -> None:
    """Boot a slot next, on trial."""
    recipe = _recipe(state, arch)
    disk_bootctl(disk, recipe).set_next(slot, tries or recipe.boot_tries)


@disk_group.command("mark-good")
@disk_argument
@arch_option
@slot_option
@pass_state
def mark_good_cmd(state: State, disk: Path, arch: str | None, slot: str) -> None:
    """Bless a slot."""
    disk_bootctl(disk, _recipe(state, arch)).mark_good(slot)


@disk_group.command("mark-unbootable")
@disk_argument
@arch_option
@slot_option
@pass_state
def mark_unbootable_cmd(state: State, disk: Path, arch: str | None, slot: str) -> None:
    """Never boot a slot (until it is set again)."""
    disk_bootctl(disk, _recipe(state, arch)).mark_unbootable(slot)


@disk_group.command("provision")
@disk_argument
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def provision_cmd(disk: Path, file: Path) -> None:
    """Check a provisioning FILE and write it onto the disk's boot partition."""
    from distbuild.disk.provision import write_provision

    name = write_provision(disk, file)
    click.echo(f"{disk}: wrote {file} as {name} on the boot partition; read on the next boot")


COMMANDS = [boot_cmd, disk_group]
