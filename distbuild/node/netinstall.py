"""The network installer: install this machine's disk from the channel, through TUF.

A network boot (:mod:`distbuild.disk.installer`) runs ``distbuild-update
install-disk`` inside the node's own root image, so the installer trusts the
channel's root.json baked into that image and uses the node's TUF client.
Its parameters come from the kernel command line::

    distbuild.channel_url=URL distbuild.channel=NAME distbuild.image=NAME
    distbuild.board=NAME [install_disk=NAME] [install_wipe=1]

The steps, each announced on the console as ``distbuild-install: …``: bring
up the network, refresh the channel, pick the newest release with a disk
image for this arch and board, check the image's signed metadata (its arch,
kind and board), pick and check the disk, fetch the mapped ranges into RAM
and verify them against the signed bmap, write them with the partition table
last (:mod:`distbuild.node.netinstall_write`), read everything back, and
leave the reboot to the caller. A network boot's refused install is tried
again after a pause (:func:`run_install`'s ``tries``). The installed image boots slot A: the disk
image is built with slot A populated and first in the boot order, and the
installer writes it unchanged.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from distbuild.core import names
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import Release
from distbuild.node import netdisk
from distbuild.node.config import NodePaths, read_release
from distbuild.node.http import Http
from distbuild.node.netinstall_write import (
    Progress,
    fetch_bmap,
    fetch_image,
    open_disk,
    wipe,
    write_image,
)
from distbuild.node.system import read_cmdline
from distbuild.node.tufclient import ChannelClient, Refused, Target

PREFIX = "distbuild-install:"
DISK_KIND = "disk"
BMAP_KIND = "disk-bmap"
NETWORK_SCRIPT = "/usr/lib/distbuild/network"
STAGING = "/run/distbuild-install/disk.img"
# A network boot's installer is unattended: a refusal is tried again every
# RETRY_PAUSE seconds (a fixed channel or disk is then picked up), for about
# ten minutes, before /init stops with the reasons on the console.
RETRY_PAUSE = 10.0
NETBOOT_TRIES = 60
_KEYS = {
    "distbuild.channel_url": "channel_url",
    "distbuild.channel": "channel",
    "distbuild.image": "image",
    "distbuild.board": "board",
    "install_disk": "disk",
    "install_wipe": "wipe",
}
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]_~%/+-]+", re.ASCII)

Say = Callable[[str], None]


class CmdlineError(DistbuildError):
    """The kernel command line does not say what to install, or says it badly."""

    exit_code = 2


@dataclass(frozen=True)
class InstallParams:
    """What the kernel command line asks to install, and where."""

    channel_url: str
    channel: str
    image: str
    board: str
    disk: str | None = None
    wipe: bool = False


def parse_cmdline(text: str) -> InstallParams:
    """The installer's words of a kernel command line, each checked; others are ignored."""
    values: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if key not in _KEYS:
            continue
        if not sep or not value:
            raise CmdlineError(f"{key} without a value on the kernel command line")
        if _KEYS[key] in values:
            raise CmdlineError(f"{key}= is on the kernel command line twice")
        values[_KEYS[key]] = value
    missing = [k for k, v in _KEYS.items() if v not in values and k.startswith("distbuild.")]
    if missing:
        raise CmdlineError(
            f"the kernel command line lacks {', '.join(m + '=' for m in missing)}",
            hint="the netboot output writes them; boot its installer with its command line",
        )
    url = values["channel_url"]
    if not _URL.fullmatch(url) or not urlsplit(url).hostname:
        raise CmdlineError(f"distbuild.channel_url={url[:200]!r} is not an http(s) URL")
    for field_, what in (
        ("channel", names.CHANNEL),
        ("image", names.IMAGE),
        ("board", names.BOARD),
    ):
        names.check_name(values[field_], what, error=CmdlineError, where="kernel command line")
    if values.get("wipe", "0") not in ("0", "1"):
        raise CmdlineError(f"install_wipe={values['wipe'][:20]!r}: use install_wipe=1 (or 0)")
    return InstallParams(
        url,
        values["channel"],
        values["image"],
        values["board"],
        values.get("disk"),
        values.get("wipe") == "1",
    )


@dataclass(frozen=True)
class Installed:
    """What was installed where, and how many image bytes came over the network."""

    version: str
    disk: str
    image_size: int
    mapped: int
    received: int


def choose(client: ChannelClient, p: InstallParams, arch: str) -> tuple[Release, Target, Target]:
    """The newest release with a disk for ``arch`` and the board; its disk and bmap targets."""
    index = client.refresh()
    found = index.latest_for_board(p.image, arch, p.board, DISK_KIND)
    if found is None:
        raise Refused(
            f"channel {p.channel} has no {p.image} disk image for {arch} board {p.board}",
            hint="publish a build of that image with the 'disk' output for this arch and board",
        )
    release, disk_path = found
    bmap_path = release.board_target(arch, p.board, BMAP_KIND)
    if bmap_path is None:
        raise Refused(f"{p.image} {release.version} has no disk.img.bmap for board {p.board}")
    disk, bm = client.target(disk_path), client.target(bmap_path)
    for target, kind in ((disk, DISK_KIND), (bm, BMAP_KIND)):
        _check_custom(target, p, arch, kind, release.version)
    return release, disk, bm


def _check_custom(target: Target, p: InstallParams, arch: str, kind: str, version: str) -> None:
    """The signed custom metadata must say this image, version, arch, board and kind."""
    want = {"image": p.image, "version": version, "arch": arch, "board": p.board, "kind": kind}
    for key, value in want.items():
        got = target.custom.get(key)
        if got != value:
            raise Refused(
                f"{target.path} is signed as {key} {str(got)[:64]!r}, not {value!r}: "
                f"{'an image for another arch' if key == 'arch' else 'not this image'}; refused",
                hint=f"this machine is {arch}; netboot the installer of its arch and board",
            )


def install(
    p: InstallParams,
    paths: NodePaths,
    http: Http,
    say: Say,
    staging: Path,
    progress: Progress | None = None,
) -> Installed:
    """Install the channel's disk image for this machine; every refusal before any write."""
    arch = read_release(paths.release).arch
    say(f"{PREFIX} channel {p.channel} at {p.channel_url}, image {p.image}, {arch} board {p.board}")
    client = ChannelClient(
        p.channel_url, p.channel, staging.parent / "tuf" / p.channel, paths.trust_anchor, http
    )
    release, disk_target, bmap_target = choose(client, p, arch)
    say(f"{PREFIX} release {release.version}: {disk_target.path} ({disk_target.length} bytes)")
    bm = fetch_bmap(http, bmap_target)
    disk = netdisk.pick(paths, p.disk)
    found = netdisk.check(paths, disk, bm.image_size, p.wipe)
    netdisk.require_writable(disk)
    say(f"{PREFIX} target disk {disk.name} ({disk.size} bytes)")
    say(f"{PREFIX} fetching {bm.mapped_bytes} mapped bytes of {bm.image_size} through TUF")
    fetched = fetch_image(http, disk_target, bm, staging)
    say(f"{PREFIX} image verified against the signed bmap ({fetched.received} bytes fetched)")
    with open_disk(disk.device) as dest:
        if found:
            say(f"{PREFIX} install_wipe=1: erasing {', '.join(found)} on {disk.name}")
            wipe(dest, disk.size)
        say(f"{PREFIX} writing {disk.name} (partition table last)")
        write_image(fetched, dest, _percent(say, progress))
    say(f"{PREFIX} verified {disk.name}: {release.version} installed, slot a boots next")
    return Installed(release.version, disk.name, bm.image_size, bm.mapped_bytes, fetched.received)


def _percent(say: Say, progress: Progress | None) -> Progress:
    """A progress callback that prints every 10 % (and passes each step on)."""
    last = [-1]

    def step(done: int, total: int) -> None:
        tenth = done * 10 // max(1, total)
        if tenth != last[0]:
            last[0] = tenth
            say(f"{PREFIX} written {tenth * 10} %")
        if progress is not None:
            progress(done, total)

    return step


def bring_up_network(paths: NodePaths, say: Say, wait: float = 60.0) -> None:
    """Run the node's network setup (DHCP on every ethernet) and wait for a default route."""
    from distbuild.core.run import run

    say(f"{PREFIX} bringing up the network")
    run([NETWORK_SCRIPT], check=False, timeout=wait)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _default_route(paths):
            say(f"{PREFIX} network up")
            return
        time.sleep(0.5)
    raise DistbuildError(
        f"no network after {wait:.0f} s (no default route)",
        hint="is the cable in and a DHCP server on the network?",
    )


def _default_route(paths: NodePaths) -> bool:
    try:
        lines = paths.at("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(f := line.split()) > 2 and f[1] == "00000000" for line in lines)


def params(paths: NodePaths) -> InstallParams:
    """The install parameters from this machine's kernel command line."""
    return parse_cmdline(read_cmdline(paths))


def _say(line: str) -> None:
    print(line, flush=True)


def run_install(
    paths: NodePaths,
    staging: Path,
    *,
    network: bool = True,
    tries: int = 1,
    pause: float = RETRY_PAUSE,
) -> int:
    """The installer from the command line to the written disk; the exit code.

    Every refusal is printed as ``distbuild-install: refused: …`` with its hint;
    the staging copy of the image (RAM) is removed either way. With ``tries``
    above 1 (the unattended installer of a network boot), a refused install is
    tried again after ``pause`` seconds, the channel and the disk read anew: a
    fixed server or disk is picked up without a power cycle.
    """
    try:
        p = params(paths)
        if network:
            bring_up_network(paths, _say)
    except DistbuildError as e:
        return _refused(e)
    for attempt in range(1, tries + 1):
        code = _attempt(p, paths, staging)
        if code == 0 or attempt == tries:
            return code
        _say(f"{PREFIX} trying again in {pause:.0f} s (attempt {attempt + 1} of {tries})")
        time.sleep(pause)
    return 1  # tries < 1: nothing was tried


def _attempt(p: InstallParams, paths: NodePaths, staging: Path) -> int:
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        install(p, paths, Http(), _say, staging)
    except DistbuildError as e:
        return _refused(e)
    finally:
        staging.unlink(missing_ok=True)
    return 0


def _refused(e: DistbuildError) -> int:
    _say(f"{PREFIX} refused: {e.message}")
    if e.hint:
        _say(f"{PREFIX} hint: {e.hint}")
    return e.exit_code


if __name__ == "__main__":
    # ``python3 -m distbuild.node.netinstall`` (the installer's /init): the
    # updater's CLI and its modules are not loaded, which is seconds under TCG.
    sys.exit(run_install(NodePaths(Path("/")), Path(STAGING), tries=NETBOOT_TRIES))
