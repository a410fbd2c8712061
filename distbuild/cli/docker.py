"""Commands that talk to a Docker engine: ``load``."""

from __future__ import annotations

from pathlib import Path

import click

from distbuild.cli.options import json_option, print_json


@click.command("load")
@click.argument("build", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--platform",
    help="The image to load, e.g. linux/arm/v7 or linux/arm64. Default: the host's platform.",
)
@click.option(
    "--tag",
    help="Name the image in Docker. Default: distbuild/IMAGE:VERSION for the host's "
    "platform, distbuild/IMAGE:VERSION-ARCH (armv7, arm64, amd64) for any other.",
)
@click.option(
    "--docker-host",
    metavar="URL",
    help="The engine, e.g. unix:///run/docker.sock. Default: $DOCKER_HOST, "
    "else unix:///var/run/docker.sock.",
)
@json_option
def load_cmd(
    build: Path, platform: str | None, tag: str | None, docker_host: str | None, as_json: bool
) -> None:
    """Load one platform's image of BUILD into Docker.

    BUILD is a build directory (with build.json) as written by 'distbuild image'.
    The image is converted to docker-archive form on the fly, so engines that
    cannot load OCI layouts (Docker 20.10) take it too. Running another arch's
    image needs qemu-user registered with binfmt_misc (qemu-user-static).
    """
    from distbuild.oci.docker import load_build

    loaded = load_build(build, platform, tag=tag, docker_host=docker_host)
    if as_json:
        print_json(
            {
                "tag": loaded.tag,
                "id": loaded.image_id,
                "platform": loaded.platform,
                "size": loaded.size,
            }
        )
    else:
        click.echo(loaded.tag)


COMMANDS = [load_cmd]
