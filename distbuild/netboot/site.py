"""One network's netboot files: a TFTP/HTTP root, dnsmasq's configuration, HTTP-boot URIs.

``distbuild netboot BUILD --dir DIR --net 192.168.1.0/24`` copies the build's
netboot artifacts for one board per arch into DIR, at their paths in the
build (so the armv7 script's ``tftpboot`` paths hold), puts that board's
armv7 ``boot.scr.uimg`` at DIR's top (the name U-Boot asks for), and writes:

- ``DIR/dnsmasq.conf``: proxy-DHCP (the network's own DHCP server keeps
  handing out addresses; dnsmasq only adds the PXE boot file for UEFI
  clients) + TFTP from DIR, DNS off;
- ``DIR/http-boot.txt``: the UEFI HTTP-boot URI per arch, when given the
  URL ``distbuild serve --netboot DIR`` serves DIR under.

Everything that goes into the configuration (paths, network, URL) is checked:
no spaces, quotes, commas or newlines can reach it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError, UsageError
from distbuild.core.fsutil import write_atomic
from distbuild.netboot.output import SCRIPT
from distbuild.netboot.uki import check_url
from distbuild.record import NETBOOT_KINDS, Artifact, BuildRecord

# dnsmasq's client system architecture names (RFC 4578 option 93).
PXE_ARCH = {"amd64": "x86-64_EFI", "arm64": "ARM64_EFI"}
CONF = "dnsmasq.conf"
HTTP_BOOT = "http-boot.txt"
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*", re.ASCII)


@dataclass(frozen=True)
class Site:
    """What a netboot directory holds: the boot file of each arch (relative to the directory)."""

    directory: Path
    boot_files: Mapping[str, str]  # arch -> path the firmware fetches
    files: tuple[str, ...]  # every file copied in


def choose_boards(record: BuildRecord, wanted: Sequence[str]) -> dict[str, str | None]:
    """arch -> the first board of ``wanted`` that has netboot files for it (None: its first).

    Every board named must have files for some arch of the build.
    """
    have: dict[str, list[str]] = {}
    for a in record.artifacts:
        if a.kind in NETBOOT_KINDS and a.board:
            have.setdefault(a.arch, []).append(a.board)
    unused = [w for w in wanted if not any(w in boards for boards in have.values())]
    if unused:
        listed = sorted({b for boards in have.values() for b in boards})
        raise UsageError(
            f"the build has no netboot files for board {unused[0]!r}",
            hint=f"boards with netboot files: {', '.join(listed) or 'none'}",
        )
    return {arch: next((w for w in wanted if w in boards), None) for arch, boards in have.items()}


def pick_board(record: BuildRecord, arch: str, wanted: str | None) -> str:
    """The board whose netboot files ``arch`` gets: ``wanted``, else the record's first."""
    boards = [
        a.board for a in record.artifacts if a.arch == arch and a.kind in NETBOOT_KINDS and a.board
    ]
    if wanted is None and boards:
        return boards[0]
    if wanted in boards:
        return wanted
    raise UsageError(
        f"the build has no netboot files for {arch} board {wanted!r}",
        hint=f"boards with netboot files for {arch}: {', '.join(sorted(set(boards))) or 'none'}"
        " (build with 'outputs: [..., netboot]')",
    )


def lay_out(record: BuildRecord, build: Path, dest: Path, boards: Mapping[str, str | None]) -> Site:
    """Copy the netboot files of one board per arch into ``dest``, each checked against the record."""
    arches = sorted({a.arch for a in record.artifacts if a.kind in NETBOOT_KINDS})
    if not arches:
        raise UsageError(
            f"build {record.image} {record.version} has no netboot files",
            hint="add netboot to the image's outputs and build it with --channel-url",
        )
    unknown = set(boards) - set(arches)
    if unknown:
        raise UsageError(f"the build has no netboot files for {', '.join(sorted(unknown))}")
    boot_files: dict[str, str] = {}
    files: dict[str, bytes] = {}  # every file checked before the first is written
    for arch in arches:
        board = pick_board(record, arch, boards.get(arch))
        for a in record.artifacts:
            if a.arch == arch and a.kind in NETBOOT_KINDS and a.board in (None, board):
                files[a.path] = _checked(build, a)
                if a.kind == "netboot-uki":
                    boot_files[arch] = a.path
                elif a.kind == "netboot-script":
                    files[SCRIPT] = files[a.path]
                    boot_files[arch] = SCRIPT
    for rel, data in files.items():
        _put(dest, rel, data)
    return Site(dest, boot_files, tuple(files))


def _checked(build: Path, a: Artifact) -> bytes:
    data = (build / a.path).read_bytes()
    if hashlib.sha256(data).hexdigest() != a.sha256:
        raise DistbuildError(
            f"{a.path} does not match its build record (sha256)",
            hint="the build was changed after it was made: rebuild it",
        )
    return data


def _put(dest: Path, rel: str, data: bytes) -> None:
    path = dest / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def check_path(path: Path) -> str:
    """An absolute path safe in a dnsmasq configuration line."""
    text = str(path)
    if _SAFE_PATH.fullmatch(text) is None:
        raise UsageError(
            f"{text!r} cannot go into a dnsmasq configuration",
            hint="use a directory whose absolute path has only letters, digits and '._/+-'",
        )
    return text


def check_net(net: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(net, strict=False)
    except ValueError:
        raise UsageError(
            f"{net!r} is not an IPv4 network",
            hint="give the home network as ADDRESS/PREFIX, e.g. 192.168.1.0/24",
        ) from None
    return network


def dnsmasq_conf(site: Site, net: str, interface: str | None = None) -> str:
    """dnsmasq's configuration: proxy-DHCP boot files for UEFI, TFTP from the site, no DNS."""
    network = check_net(net)
    lines = [
        "# distbuild network install: proxy-DHCP + TFTP (written by 'distbuild netboot').",
        "# The network's own DHCP server still hands out the addresses; this only adds",
        "# where PXE clients find their boot file. Run: dnsmasq --conf-file=THIS --no-daemon",
        "port=0",
        f"dhcp-range={network.network_address},proxy,{network.netmask}",
        "enable-tftp",
        f"tftp-root={check_path(site.directory.resolve())}",
        "log-dhcp",
    ]
    if interface is not None:
        lines.append(f"interface={check_interface(interface)}")
    for arch, file in sorted(site.boot_files.items()):
        if arch in PXE_ARCH:
            lines.append(
                f"pxe-service={PXE_ARCH[arch]},distbuild-{arch},{_check_word(file, 'path')}"
            )
    if "armv7" in site.boot_files:
        lines += [
            "# armv7 (U-Boot) asks for boot.scr.uimg over plain DHCP/TFTP: U-Boot takes the",
            "# TFTP server from the DHCP answer, so point the router's next-server (option 66)",
            "# here, or run dnsmasq as the DHCP server, where this line names the file:",
            f"dhcp-boot={SCRIPT}",
        ]
    return "\n".join(lines) + "\n"


def check_interface(name: str) -> str:
    return _check_word(name, "interface")


def _check_word(value: str, what: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9._/+-]{1,255}", value, re.ASCII) is None or ".." in value:
        raise UsageError(f"the {what} {value!r} cannot go into a dnsmasq configuration")
    return value


def http_boot_uris(site: Site, base_url: str) -> dict[str, str]:
    """The UEFI HTTP-boot URI of each UEFI arch's boot file under ``base_url``."""
    base = check_url(base_url, "netboot URL")
    return {
        arch: f"{base}/{file}" for arch, file in sorted(site.boot_files.items()) if arch in PXE_ARCH
    }


def write_site_files(
    site: Site, net: str, http_url: str | None, interface: str | None
) -> list[Path]:
    """Write dnsmasq.conf (and http-boot.txt) into the site directory; return what was written."""
    conf = site.directory / CONF
    write_atomic(conf, dnsmasq_conf(site, net, interface).encode())
    written = [conf]
    if http_url is not None:
        uris = http_boot_uris(site, http_url)
        text = "".join(f"{arch} {uri}\n" for arch, uri in uris.items())
        write_atomic(site.directory / HTTP_BOOT, text.encode())
        written.append(site.directory / HTTP_BOOT)
    return written


__all__ = ["Site", "dnsmasq_conf", "http_boot_uris", "lay_out", "write_site_files"]
