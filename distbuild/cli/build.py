"""Commands that build: ``image``, ``lock``, ``merge``, ``recipes check``."""

from __future__ import annotations

from pathlib import Path

import click

from distbuild.build import build, plan_locks
from distbuild.cli import options
from distbuild.cli.common import State, pass_state
from distbuild.cli.options import arch_option, json_option, print_json
from distbuild.context import ROOT_FILESYSTEMS, BuildOptions
from distbuild.core import ui
from distbuild.core.arch import parse_arches
from distbuild.core.errors import UsageError
from distbuild.disk.provision import check_provision_file
from distbuild.merge import merge
from distbuild.model.board import DEFAULT_BOARD
from distbuild.model.image import check_all, load_image
from distbuild.model.recipe import load_recipe
from distbuild.paths import cache_dir
from distbuild.rootfs.install_updater import UpdaterSetup
from distbuild.rootfs.lock import lock_path

arches_option = arch_option(multiple=True, allow_all=True, required=True)
allow_outside_option = click.option(
    "--allow-outside-project",
    "allow_outside",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Let definitions read this path outside the project (include, overlay); repeatable.",
)
mirror_option = click.option(
    "--mirror",
    envvar="DISTBUILD_MIRROR",
    help="Debian mirror URL. Default: the host's apt sources.",
)


def _updater_setup(
    channel_url: str | None, trust_root: Path | None, channel: str, settings: tuple[str, ...]
) -> UpdaterSetup | None:
    """The channel a node image's updater follows, if the command line names one."""
    if channel_url is None and trust_root is None and not settings:
        return None
    if channel_url is None or trust_root is None:
        raise UsageError(
            "--channel-url and --trust-root go together",
            hint="a node needs both where its channel is and the root metadata it trusts",
        )
    return UpdaterSetup.parse(channel_url, trust_root, channel, settings)


@click.command("image")
@arches_option
@click.option(
    "--image",
    "image",
    type=options.IMAGE,
    default="node",
    show_default=True,
    help="Image definition name.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Output directory.",
)
@click.option(
    "--release",
    "version",
    type=options.VERSION,
    metavar="VERSION",
    help="The release's version. Default: from the image or the date.",
)
@click.option(
    "--source-date-epoch", type=options.EPOCH, help="Timestamp for every file and record."
)
@click.option("--compression-level", type=click.IntRange(1, 9), default=6, show_default=True)
@click.option(
    "--root-fs",
    type=click.Choice(ROOT_FILESYSTEMS),
    envvar="DISTBUILD_ROOT_FS",
    default=ROOT_FILESYSTEMS[0],
    show_default=True,
    help="The root output's file system.",
)
@click.option("--update-lock", is_flag=True, help="Resolve packages anew and rewrite the lock.")
@click.option("--locked", is_flag=True, help="Fail if the lock is missing or stale (for CI).")
@click.option("--load", "load", is_flag=True, help="Load the host's image into Docker afterwards.")
@click.option("--platform", help="With --load: the platform to load, e.g. linux/arm/v7.")
@json_option
@click.option(
    "--channel-url",
    help="Where the node's updater finds its channels (baked into /etc/distbuild/update.yaml).",
)
@click.option("--channel", "channel", type=options.CHANNEL, default="stable", show_default=True)
@click.option(
    "--trust-root",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The channel's root metadata (metadata/1.root.json): the node's trust anchor.",
)
@click.option(
    "--update-setting",
    "update_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another update.yaml setting, e.g. reboot=fleetlock (repeatable).",
)
@click.option(
    "--provision",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A provisioning file baked into the node (read if the boot partition has none).",
)
@click.option(
    "--board",
    "boards",
    multiple=True,
    type=options.BOARD,
    metavar="BOARD",
    help="Make a disk for this board (repeatable; all = every board of each arch). Default: qemu.",
)
@mirror_option
@allow_outside_option
@pass_state
def image_cmd(
    state: State,
    arches: tuple[str, ...],
    image: str,
    out: Path,
    version: str | None,
    source_date_epoch: int | None,
    compression_level: int,
    root_fs: str,
    update_lock: bool,
    locked: bool,
    load: bool,
    platform: str | None,
    as_json: bool,
    channel_url: str | None,
    channel: str,
    trust_root: Path | None,
    update_settings: tuple[str, ...],
    provision: Path | None,
    boards: tuple[str, ...],
    mirror: str | None,
    allow_outside: tuple[Path, ...],
) -> None:
    """Build an image for one or more architectures (disks: one per board)."""
    if platform and not load:
        raise UsageError(
            "--platform only applies with --load", hint="add --load, or drop --platform"
        )
    updater = _updater_setup(channel_url, trust_root, channel, update_settings)
    baked = check_provision_file(provision)[1] if provision else None
    opts = BuildOptions(
        project=state.project,
        image=image,
        arches=tuple(parse_arches(arches)),
        out=out.resolve(),
        cache=cache_dir(),
        version=version,
        source_date_epoch=source_date_epoch,
        mirror=mirror,
        compression_level=compression_level,
        root_fs=root_fs,
        update_lock=update_lock,
        locked=locked,
        updater=updater,
        allow_outside=allow_outside,
        provision=baked,
        boards=tuple(dict.fromkeys(boards)) or (DEFAULT_BOARD,),
    )
    record, directory = build(opts)
    if load:
        from distbuild.oci.docker import load_build

        load_build(directory, platform)
    if as_json:
        print_json(record.to_dict())
    else:
        ui.note(f"built {record.image} {record.version} for {', '.join(record.arches)}")
        click.echo(directory / "build.json")


@click.command("lock")
@arches_option
@click.option("--image", "image", type=options.IMAGE, default="node", show_default=True)
@mirror_option
@allow_outside_option
@json_option
@pass_state
def lock_cmd(
    state: State,
    arches: tuple[str, ...],
    image: str,
    mirror: str | None,
    allow_outside: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Resolve an image's packages and write every lock it uses (image and boot) per arch."""
    project = state.project
    written: list[dict[str, object]] = []
    for arch in parse_arches(arches):
        recipe = load_recipe(project, arch, allow_outside)
        img = load_image(project, image, recipe, allow=allow_outside)
        opts = BuildOptions(
            project=project,
            image=image,
            arches=(arch,),
            out=Path("."),
            cache=cache_dir(),
            mirror=mirror,
            update_lock=True,
        )
        for name, lock in plan_locks(opts, recipe, img).items():
            path = lock_path(project, name, arch.name)
            count = len(lock.packages)
            written.append({"arch": arch.name, "lock": name, "path": str(path), "packages": count})
            if not as_json:
                click.echo(f"{path}: {count} packages")
    if as_json:
        print_json({"locks": written})


@click.command("merge")
@click.argument("builds", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@json_option
def merge_cmd(builds: tuple[Path, ...], out: Path, as_json: bool) -> None:
    """Merge single-arch builds (CI matrix jobs) into one multi-arch build."""
    record, directory = merge(list(builds), out.resolve())
    if as_json:
        print_json(record.to_dict())
    else:
        click.echo(directory / "build.json")


@click.group("recipes")
def recipes_group() -> None:
    """Work with recipes and image definitions."""


@recipes_group.command("check")
@allow_outside_option
@json_option
@pass_state
def recipes_check(state: State, allow_outside: tuple[Path, ...], as_json: bool) -> None:
    """Validate every recipe and image definition for every arch."""
    checked = check_all(state.project, allow_outside)
    if as_json:
        print_json({"checked": checked, "ok": True})
        return
    for item in checked:
        click.echo(f"ok  {item}")


COMMANDS = [image_cmd, lock_cmd, merge_cmd, recipes_group]
