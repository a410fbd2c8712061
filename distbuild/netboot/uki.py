"""The installer's unified kernel image and the command line it boots with.

The command line carries where the installer finds its channel; it is built
from a URL and names that may come from a flag or a build record, so every
part is checked strictly (no spaces, quotes or control characters can reach
the kernel command line, a U-Boot script or a dnsmasq configuration).
"""

from __future__ import annotations

import re

from distbuild.core import names
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.netboot.pe import add_sections, read_headers

# http(s)://host[:port][/path]: a DNS name, IPv4 or [IPv6] host, a path of
# unreserved characters; no user info, query or fragment.
_URL = re.compile(
    r"https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%+-]*)*",
    re.ASCII,
)
MAX_URL = 512

# What the stub's machine must be, per distbuild arch.
STUB_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def check_url(url: str, what: str = "channel URL") -> str:
    """``url`` if it is a plain http(s) URL safe to put on a kernel command line, else an error."""
    if len(url) > MAX_URL or _URL.fullmatch(url) is None or ".." in url.split("://", 1)[-1]:
        raise UsageError(
            f"the {what} {url!r} cannot go on a kernel command line",
            hint="use http(s)://host[:port]/path with letters, digits and '._~%+-' only "
            "(no spaces, quotes, user info, query or '..')",
        )
    return url.rstrip("/")


def check_console(console: str) -> str:
    """``console`` if it is a device with optional options (``ttyS0,115200``), else an error."""
    if not names.is_console(console):
        raise UsageError(
            f"invalid console {console!r}",
            hint="a console is a device name with optional options, such as ttyS0,115200",
        )
    return console


def installer_cmdline(
    channel_url: str, channel: str, image: str, board: str, consoles: tuple[str, ...]
) -> str:
    """The installer's kernel command line: its channel, image and board, and consoles."""
    values = {
        "distbuild.channel_url": check_url(channel_url),
        "distbuild.channel": names.check_name(channel, names.CHANNEL),
        "distbuild.image": names.check_name(image, names.IMAGE),
        "distbuild.board": names.check_name(board, names.BOARD),
    }
    words = [f"console={check_console(c)}" for c in consoles]
    words += [f"{k}={v}" for k, v in values.items()]
    return " ".join(words)


def os_release(image: str, version: str) -> str:
    """The UKI's ``.osrel``: what boot menus show for it."""
    return (
        f"ID=distbuild\nNAME=distbuild installer\nVERSION_ID={version}\n"
        f'PRETTY_NAME="distbuild {image} {version} network installer"\n'
    )


def build_uki(
    stub: bytes, arch: str, kernel: bytes, initrd: bytes, cmdline: str, osrel: str
) -> bytes:
    """systemd's EFI stub with ``.osrel``, ``.cmdline``, ``.initrd`` and ``.linux`` appended."""
    machine = read_headers(stub).machine
    if STUB_MACHINES.get(arch) != machine:
        raise DistbuildError(
            f"the EFI stub is for {machine}, not {arch}",
            hint="the stub must come from the target arch's systemd-boot-efi package",
        )
    return add_sections(
        stub,
        [
            (".osrel", osrel.encode()),
            (".cmdline", cmdline.encode() + b"\0"),
            (".initrd", initrd),
            (".linux", kernel),
        ],
    )
