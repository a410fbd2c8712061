"""``distbuild netboot``: one network's TFTP/HTTP root and dnsmasq configuration from a build."""

from __future__ import annotations

from pathlib import Path

import click

from distbuild.cli import options
from distbuild.cli.options import json_option, print_json
from distbuild.netboot import site
from distbuild.netboot.uki import check_url
from distbuild.record import load_record


@click.command("netboot")
@click.argument("build", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--dir",
    "dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The TFTP (and HTTP) root to fill.",
)
@click.option("--net", required=True, help="The network PXE clients are on, e.g. 192.168.1.0/24.")
@click.option(
    "--board",
    "boards",
    multiple=True,
    type=options.BOARD,
    metavar="BOARD",
    help="The board whose files each arch gets: the first named that the arch has "
    "(repeatable; default: each arch's first).",
)
@click.option("--interface", help="The interface dnsmasq answers on (default: all).")
@click.option(
    "--http-url",
    help="Where 'distbuild serve --netboot DIR' serves DIR, e.g. http://192.168.1.5:8080/netboot.",
)
@json_option
def netboot_cmd(
    build: Path,
    dest: Path,
    net: str,
    boards: tuple[str, ...],
    interface: str | None,
    http_url: str | None,
    as_json: bool,
) -> None:
    """Lay out a build's netboot files for one network and write its dnsmasq configuration."""
    record, directory = load_record(build)
    site.check_net(net)  # refused before anything is copied
    dest = dest.resolve()
    site.check_path(dest)
    chosen = site.choose_boards(record, boards)
    if interface is not None:
        site.check_interface(interface)
    if http_url is not None:
        check_url(http_url, "netboot URL")
    laid = site.lay_out(record, directory, dest, chosen)
    written = site.write_site_files(laid, net, http_url, interface)
    uris = site.http_boot_uris(laid, http_url) if http_url else {}
    if as_json:
        print_json(
            {
                "dir": str(dest),
                "boot_files": dict(laid.boot_files),
                "config": str(written[0]),
                "http_boot": uris,
            }
        )
        return
    for arch, file in sorted(laid.boot_files.items()):
        click.echo(f"{arch}: {file}" + (f"  (HTTP boot: {uris[arch]})" if arch in uris else ""))
    click.echo(written[0])


COMMANDS = [netboot_cmd]
