"""Channel commands: ``keys``, ``publish``, ``promote``, ``channel``, ``serve``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from distbuild.channel.admin import (
    ROOT_WARNING,
    create_channel,
    refresh_channel,
    rotate_roots,
    unfinished_rotations,
)
from distbuild.channel.keys import ALLOW_ROOT_ENV, KeyStore, passphrase_from_env
from distbuild.channel.model import ROLES, channel_names, load_channel, parse_duration
from distbuild.channel.pipeline import release_pipeline
from distbuild.channel.publish import Outcome, promote, publish
from distbuild.channel.repo import ChannelRepo, list_channels, utcnow
from distbuild.channel.view import ChannelView, describe
from distbuild.cli import options
from distbuild.cli.common import State, pass_state
from distbuild.cli.options import arch_option, json_option, print_json
from distbuild.core import ui
from distbuild.core.errors import UsageError

_F = TypeVar("_F", bound=Callable[..., Any])


def _directory_option(*decls: str, envvar: str, help: str) -> Callable[[_F], _F]:
    """A directory every channel command needs, given as a flag or in the environment."""
    return click.option(
        *decls,
        type=click.Path(file_okay=False, path_type=Path),
        envvar=envvar,
        required=True,
        help=help,
    )


repo_option = _directory_option(
    "--repo",
    envvar="DISTBUILD_REPO",
    help="Repository root: one directory per channel. Env: DISTBUILD_REPO.",
)
keys_option = _directory_option(
    "--keys",
    "keys_dir",
    envvar="DISTBUILD_KEYS",
    help="Key directory. Env: DISTBUILD_KEYS (passphrase: DISTBUILD_KEY_PASSPHRASE).",
)
allow_root_option = click.option(
    "--allow-root-keys",
    is_flag=True,
    envvar=ALLOW_ROOT_ENV,
    help="Sign even though the key directory holds root private keys (default: refuse; "
    f"export the online keys with 'keys export-online'). Env: {ALLOW_ROOT_ENV}=1.",
)

registry_option = click.option(
    "--registry",
    envvar="DISTBUILD_REGISTRY",
    metavar="HOST[:PORT]/NAMESPACE",
    help="Push and tag the image index in NAMESPACE/<image> there. Default: the channel's "
    "'registry:', else none. Env: DISTBUILD_REGISTRY.",
)


@dataclass(frozen=True)
class _Signing:
    """Where and with which keys publish and promote sign (:func:`release_options`)."""

    repo: Path
    keys_dir: Path
    allow_root_keys: bool
    registry: str | None
    as_json: bool

    def keys(self) -> KeyStore:
        return _keys(self.keys_dir, self.allow_root_keys)


def release_options(f: Callable[..., None]) -> Callable[..., None]:
    """The options of the commands that sign a release into a channel (publish, promote),
    handed to the command as one ``signing`` argument."""

    @functools.wraps(f)
    def command(
        *args: Any,
        repo: Path,
        keys_dir: Path,
        allow_root_keys: bool,
        registry: str | None,
        as_json: bool,
        **kwargs: Any,
    ) -> None:
        f(*args, signing=_Signing(repo, keys_dir, allow_root_keys, registry, as_json), **kwargs)

    for option in (json_option, registry_option, allow_root_option, keys_option, repo_option):
        command = option(command)  # innermost first, as a stack of decorators applies them
    return command


def _keys(path: Path, allow_root_keys: bool = False) -> KeyStore:
    return KeyStore.load(path, passphrase_from_env(), allow_root_keys=allow_root_keys)


def _roles(store: KeyStore, roles: tuple[str, ...] = ROLES) -> dict[str, object]:
    return {
        role: {"threshold": store.roles[role].threshold, "keyids": list(store.roles[role].keyids)}
        for role in roles
    }


# -- keys ---------------------------------------------------------------------------


@click.group("keys")
def keys_group() -> None:
    """Create and rotate the TUF signing keys of the channels."""


@keys_group.command("init")
@keys_option
@click.option("--root-keys", type=options.COUNT, help="Number of root keys.")
@click.option("--targets-keys", type=options.COUNT, help="Number of targets keys.")
@click.option("--snapshot-keys", type=options.COUNT, help="Number of snapshot keys.")
@click.option("--timestamp-keys", type=options.COUNT, help="Number of timestamp keys.")
@click.option(
    "--threshold",
    "thresholds",
    type=options.RoleCount(ROLES),
    multiple=True,
    help="Signatures a role needs (default 1), e.g. --threshold root=2.",
)
@json_option
def keys_init(
    keys_dir: Path, thresholds: tuple[tuple[str, int], ...], as_json: bool, **counts: int | None
) -> None:
    """Create Ed25519 keys for root, targets, snapshot and timestamp (files 0600)."""
    wanted = dict(thresholds)
    number = {}
    for role in ROLES:
        given = counts.get(f"{role}_keys")
        number[role] = given if given is not None else max(1, wanted.get(role, 1))
    store = KeyStore.create(keys_dir, number, wanted, passphrase_from_env())
    if as_json:
        print_json({"keys": str(keys_dir), "roles": _roles(store)})
        return
    for role in ROLES:
        rk = store.roles[role]
        click.echo(
            f"{role:<9} {rk.threshold} of {len(rk.keyids)}: {', '.join(k[:16] for k in rk.keyids)}"
        )
    ui.note(f"keys written to {keys_dir}; keep the root keys offline when not rotating")


@keys_group.command("rotate-root")
@keys_option
@repo_option
@click.option("--root-keys", type=options.COUNT, help="Number of new root keys (default: as now).")
@click.option(
    "--threshold",
    type=options.RoleCount(("root",)),
    help="Signatures the new root needs, as root=N (default: as now, at most the keys).",
)
@click.option(
    "--no-new-keys",
    is_flag=True,
    help="Keep the current root keys; only write a new root version (e.g. to extend its expiry, "
    "or to finish an interrupted rotation).",
)
@json_option
@pass_state
def keys_rotate_root(
    state: State,
    keys_dir: Path,
    repo: Path,
    root_keys: int | None,
    threshold: tuple[str, int] | None,
    no_new_keys: bool,
    as_json: bool,
) -> None:
    """Replace the root keys and sign root N+1 (old and new keys) in every channel."""
    store = _keys(keys_dir)
    project = state.project
    channels = {name: load_channel(project, name) for name in list_channels(repo)}
    if not channels:
        raise UsageError(f"no channels under {repo}", hint="check --repo / DISTBUILD_REPO")
    store.signers("root")  # the current root keys sign the new roots: unlock them first
    # Check every channel before writing anything; finish what a stopped run began.
    unfinished = unfinished_rotations(repo, channels, store)
    if unfinished:
        ui.note(
            f"finishing an interrupted rotation of {', '.join(unfinished)} to the key "
            "directory's current root keys; no new keys made (run rotate-root again for that)"
        )
        done = rotate_roots(repo, channels, store, only=unfinished)
    else:
        if not no_new_keys:
            old = store.roles["root"]
            count = len(old.keyids) if root_keys is None else root_keys
            needed = min(old.threshold, count) if threshold is None else threshold[1]
            store.rotate("root", count, needed)
        done = rotate_roots(repo, channels, store)
    if as_json:
        print_json(
            {"root_versions": done, "finished": unfinished, "roles": _roles(store, ("root",))}
        )
        return
    for name, version in done.items():
        click.echo(f"{name}: root version {version}")


@keys_group.command("export-online")
@keys_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New key directory to write (mode 0700, files 0600).",
)
@json_option
def keys_export_online(keys_dir: Path, out: Path, as_json: bool) -> None:
    """Copy only the online keys (targets, snapshot, timestamp; bins use targets) for CI.

    The copy lists every public key, so it can check a channel's root, but
    holds no root private key: publish, promote and refresh accept it.
    """
    store = _keys(keys_dir)
    store.export_online(out)
    if as_json:
        print_json({"keys": str(out), "roles": _roles(store, ("targets", "snapshot", "timestamp"))})
        return
    for role in ("targets", "snapshot", "timestamp"):
        click.echo(f"{role:<9} {', '.join(k[:16] for k in store.roles[role].keyids)}")
    ui.note(f"online keys written to {out}; keep {keys_dir} (root keys) offline")


# -- publish / promote ----------------------------------------------------------------


def _report(outcome: Outcome, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(
            {
                "channel": outcome.channel,
                "image": outcome.image,
                "version": outcome.version,
                "targets": list(outcome.targets),
                "pruned": list(outcome.pruned),
                "unchanged": outcome.unchanged,
            }
        )
        return
    if outcome.unchanged:
        ui.note(f"{outcome.channel} already has {outcome.image} {outcome.version}; nothing to do")
    else:
        ui.note(
            f"{verb} {outcome.image} {outcome.version} to {outcome.channel}: "
            f"{len(outcome.targets)} targets"
        )
    if outcome.pruned:
        ui.note(f"dropped from {outcome.channel}: {', '.join(outcome.pruned)}")
    for path in outcome.targets:
        click.echo(path)


@click.command("publish")
@click.argument("build", type=click.Path(path_type=Path))
@click.option(
    "--channel",
    type=options.CHANNEL,
    required=True,
    help="Channel to publish to (channels/<name>.yaml).",
)
@release_options
@pass_state
def publish_cmd(
    state: State,
    build: Path,
    channel: str,
    signing: _Signing,
) -> None:
    """Publish a build's files (not OCI content) as TUF targets of a channel."""
    definition = load_channel(state.project, channel)
    pipeline = release_pipeline(definition, signing.registry)
    keys = signing.keys()
    outcome = publish(signing.repo, definition, build, keys, pipeline=pipeline)
    _report(outcome, signing.as_json, "published")


@click.command("promote")
@click.argument("source", type=options.CHANNEL)
@click.argument("dest", type=options.CHANNEL)
@click.option(
    "--release",
    "version",
    type=options.VERSION,
    metavar="VERSION",
    required=True,
    help="The version of the release to promote.",
)
@click.option(
    "--image", type=options.IMAGE, help="The image, when the source holds that version of several."
)
@release_options
@pass_state
def promote_cmd(
    state: State,
    source: str,
    dest: str,
    version: str,
    image: str | None,
    signing: _Signing,
) -> None:
    """Re-sign a release of channel SOURCE into channel DEST (no rebuild)."""
    src = load_channel(state.project, source)
    dst = load_channel(state.project, dest)
    pipeline = release_pipeline(dst, signing.registry)
    keys = signing.keys()
    outcome = promote(signing.repo, src, dst, version, keys, image=image, pipeline=pipeline)
    _report(outcome, signing.as_json, "promoted")


# -- channel ------------------------------------------------------------------------


@click.group("channel")
def channel_group() -> None:
    """Inspect and maintain channels."""


@channel_group.command("init")
@click.argument("name", type=options.CHANNEL)
@repo_option
@keys_option
@json_option
@pass_state
def channel_init(state: State, name: str, repo: Path, keys_dir: Path, as_json: bool) -> None:
    """Create an empty channel (publish does this on first use)."""
    definition = load_channel(state.project, name)
    created = create_channel(repo, definition, _keys(keys_dir))
    if as_json:
        print_json({"channel": name, "path": str(repo / name), "created": created})
    elif created:
        ui.note(f"created channel {name} in {repo / name}")
    else:
        ui.note(f"channel {name} exists already")


@channel_group.command("show")
@click.argument("name", type=options.CHANNEL)
@arch_option(help="Only this arch: armv7, arm64 or amd64.")
@repo_option
@json_option
def channel_show(name: str, arch: str | None, repo: Path, as_json: bool) -> None:
    """Show what a subscriber sees: newest release per image and arch, digests, dates."""
    view = describe(ChannelRepo(repo, name), arch)
    if as_json:
        print_json(view.to_dict())
    else:
        _print_view(view)


def _print_view(view: ChannelView) -> None:
    click.echo(
        f"channel {view.channel}: root v{view.root_version}, timestamp v{view.timestamp_version} "
        f"(expires {view.expires['timestamp']})"
    )
    if not view.latest:
        click.echo("no releases")
    for item in view.latest:
        waves = ", ".join(f"{p}% from {t}" for p, t in item.rollout)
        click.echo(f"\n{item.image} {item.version} {item.arch}  published {item.published}")
        click.echo(f"  rollout: {waves}")
        for t in item.targets:
            click.echo(f"  {t.kind:<8} {t.path}  sha256:{t.sha256}  {t.length} bytes")
    for image, versions in view.releases.items():
        total = view.totals.get(image, len(versions))
        more = f" (listed: newest {len(versions)})" if total > len(versions) else ""
        click.echo(f"\n{image}: {total} release(s){more}: {', '.join(versions)}")


@channel_group.command("refresh")
@click.option(
    "--channel",
    "names",
    type=options.CHANNEL,
    multiple=True,
    help="Channel(s); default: every one in --repo.",
)
@click.option("--force", is_flag=True, help="Re-sign everything, expiring soon or not.")
@click.option(
    "--margin", help="Re-sign roles expiring within this (e.g. 12h). Default: half their lifetime."
)
@repo_option
@keys_option
@allow_root_option
@json_option
@pass_state
def channel_refresh(
    state: State,
    names: tuple[str, ...],
    force: bool,
    margin: str | None,
    repo: Path,
    keys_dir: Path,
    allow_root_keys: bool,
    as_json: bool,
) -> None:
    """Re-sign timestamp, snapshot and targets before they expire (run it from cron)."""
    try:
        window = parse_duration(margin) if margin is not None else None
    except ValueError as e:
        raise UsageError(str(e), hint="write a duration like 30m, 12h or 2d") from None
    chosen = list(names) or list_channels(repo)
    if not chosen:
        raise UsageError(f"no channels under {repo}", hint="check --repo / DISTBUILD_REPO")
    definitions = [load_channel(state.project, n) for n in chosen]
    store = _keys(keys_dir, allow_root_keys)
    refreshed = []
    for definition in definitions:
        result = refresh_channel(repo, definition, store, margin=window, force=force)
        refreshed.append(
            {
                "channel": result.channel,
                "resigned": list(result.roles),
                "root_expires": f"{result.root_expires:%Y-%m-%dT%H:%M:%SZ}",
            }
        )
        if not as_json:
            click.echo(f"{result.channel}: {result.summary}")
        if result.root_expires - utcnow() < ROOT_WARNING:
            ui.note(
                f"warning: root of {result.channel} expires {result.root_expires:%Y-%m-%d}; "
                "run 'distbuild keys rotate-root --no-new-keys' with the root keys"
            )
    if as_json:
        print_json({"channels": refreshed})


@channel_group.command("list")
@repo_option
@json_option
@pass_state
def channel_list(state: State, repo: Path, as_json: bool) -> None:
    """List the channels the project defines and whether the repository has them."""
    have = set(list_channels(repo))
    every = sorted(set(channel_names(state.project)) | have)
    if as_json:
        print_json({"channels": [{"name": n, "published": n in have} for n in every]})
        return
    for name in every:
        click.echo(f"{name:<12} {'published' if name in have else 'not created'}")


# -- serve --------------------------------------------------------------------------


@click.command("serve")
@repo_option
@click.option("--port", type=options.LISTEN_PORT, default=8080, show_default=True)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--netboot",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also serve this 'distbuild netboot --dir' directory under /netboot/ (UEFI HTTP boot).",
)
def serve_cmd(repo: Path, port: int, bind: str, netboot: Path | None) -> None:
    """Serve the repository over HTTP (static files, Range requests) until interrupted."""
    from distbuild.channel.serve import make_server

    if not repo.is_dir():
        raise UsageError(f"no repository at {repo}", hint="publish a build first, or fix --repo")
    server = make_server(repo, port, bind, netboot=netboot)
    if netboot is not None:
        ui.note(f"netboot files: {server.url}/netboot/")
    for name in list_channels(repo):
        meta, targets = server.channel_urls(name)
        ui.note(f"{name}: metadata {meta}  targets {targets}")
    click.echo(server.url)
    try:
        server.httpd.serve_forever()
    finally:
        server.httpd.server_close()


COMMANDS = [keys_group, publish_cmd, promote_cmd, channel_group, serve_cmd]
