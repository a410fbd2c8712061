"""Commands that talk to OCI registries: ``push``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from distbuild.cli.options import json_option, print_json
from distbuild.core import ui
from distbuild.oci.push import push_build
from distbuild.oci.reference import Reference

_SIZE = re.compile(r"^(\d{1,12})\s*([KMG]?)(?:i?B)?$", re.IGNORECASE | re.ASCII)
_MAX_CHUNK = 1 << 30  # a chunk is held in memory


class _Size(click.ParamType[int]):
    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        m = _SIZE.match(str(value).strip())
        if not m:
            self.fail(f"{str(value)[:40]!r} is not a size like 5M or 1048576", param, ctx)
        n = int(m[1]) << (10 * " KMG".index((m[2] or " ").upper()))
        if n < 64 * 1024:
            self.fail("chunks smaller than 64K make registries slow; use at least 64K", param, ctx)
        if n > _MAX_CHUNK:
            self.fail("chunks are held in memory; use at most 1G", param, ctx)
        return n


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@click.command("push")
@click.argument("build", type=click.Path(exists=True, path_type=Path))
@click.argument("ref")
@click.option("--tag", "tags", multiple=True, help="Another tag for the same index (repeatable).")
@click.option(
    "--plain-http/--https",
    "plain_http",
    default=None,
    help="Talk HTTP instead of HTTPS. Default: HTTP only for loopback registries.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=4,
    show_default=True,
    help="Tries again after a 5xx or a dropped connection, with exponential backoff.",
)
@click.option(
    "--chunk-size",
    type=_Size(),
    default="5M",
    show_default=True,
    help="Blobs larger than this are uploaded in chunks of this size.",
)
@json_option
def push_cmd(
    build: Path,
    ref: str,
    tags: tuple[str, ...],
    plain_http: bool | None,
    retries: int,
    chunk_size: int,
    as_json: bool,
) -> None:
    """Push BUILD's multi-arch image to REF (HOST[:PORT]/REPOSITORY[:TAG]).

    Blobs go first, then the per-arch manifests, the index and its tags last,
    so a push that stops halfway leaves nothing dangling; pushing again skips
    what the registry already has. Credentials come from
    DISTBUILD_REGISTRY_USERNAME/DISTBUILD_REGISTRY_PASSWORD or Docker's
    config.json (DOCKER_CONFIG). With no tag in REF the build's version is used.
    """
    target = Reference.parse(ref)
    result = push_build(
        build,
        target,
        extra_tags=list(tags),
        plain_http=plain_http,
        retries=retries,
        chunk_size=chunk_size,
    )
    if as_json:
        print_json(result.to_dict())
        return
    ui.note(
        f"blobs: {result.blobs_uploaded} uploaded ({human_size(result.bytes_uploaded)}), "
        f"{result.blobs_skipped} already there ({human_size(result.bytes_skipped)}); "
        f"manifests: {result.manifests_uploaded} uploaded, {result.manifests_skipped} already there; "
        f"tags: {', '.join(result.tags)}; {result.seconds:.1f}s"
        + (f", {result.retries} retries" if result.retries else "")
    )
    click.echo(f"{target.registry}/{target.repository}@{result.digest}")


COMMANDS = [push_cmd]
