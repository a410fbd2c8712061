"""Customising an unpacked root in Python, in place of maintainer scripts.

Maintainer scripts are target code, so they never run; the few effects an
image needs from them (the CA bundle, busybox applet links, users) are done
here, followed by the image definition's own files, links and overlay.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from distbuild import ui
from distbuild.errors import DistbuildError
from distbuild.model.image import Group, ImageDef, User

Hook = Callable[[Path, ImageDef], None]
HOOKS: dict[str, Hook] = {}


def hook(package: str) -> Callable[[Hook], Hook]:
    def register(fn: Hook) -> Hook:
        HOOKS[package] = fn
        return fn

    return register


def installed(root: Path) -> set[str]:
    status = root / "var/lib/dpkg/status"
    if not status.exists():
        return set()
    return {
        line.split(":", 1)[1].strip()
        for line in status.read_text().splitlines()
        if line.startswith("Package:")
    }


@hook("ca-certificates")
def ca_bundle(root: Path, image: ImageDef) -> None:
    """What update-ca-certificates would write: one PEM bundle of Mozilla's CAs."""
    certs = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs)
    out = root / "etc/ssl/certs"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca-certificates.crt").write_bytes(bundle)
    (out / "ca-certificates.crt").chmod(0o644)
    ui.debug(f"ca-certificates: {len(certs)} certificates bundled")


# Applets that busybox installs in sbin; everything else goes to usr/bin.
_SBIN = set(
    [
        "acpid",
        "adjtimex",
        "arp",
        "blkid",
        "blockdev",
        "brctl",
        "chroot",
        "depmod",
        "devmem",
        "fbset",
        "fdisk",
        "findfs",
        "freeramdisk",
        "fsck",
        "getty",
        "halt",
        "hwclock",
        "ifconfig",
        "ifdown",
        "ifup",
        "init",
        "insmod",
        "ip",
        "ipneigh",
        "iplink",
        "ipaddr",
        "iproute",
        "iprule",
        "klogd",
        "loadkmap",
        "logread",
        "losetup",
        "lsmod",
        "mdev",
        "mkdosfs",
        "mke2fs",
        "mkfs.vfat",
        "mkswap",
        "modinfo",
        "modprobe",
        "nameif",
        "pivot_root",
        "poweroff",
        "reboot",
        "rmmod",
        "route",
        "run-init",
        "start-stop-daemon",
        "sulogin",
        "swapoff",
        "swapon",
        "switch_root",
        "sysctl",
        "syslogd",
        "tunctl",
        "udhcpc",
        "udhcpd",
        "vconfig",
        "watchdog",
    ]
)


def busybox_applets(binary: bytes) -> list[str]:
    """Applet names from busybox's packed name table, read without running it."""
    start = binary.find(b"[\x00[[\x00")
    if start < 0:
        raise DistbuildError("busybox: applet table not found in the binary")
    names = []
    for raw in binary[start : start + 16384].split(b"\x00"):
        if not raw:
            break
        names.append(raw.decode("ascii"))
    return names


@hook("busybox")
def busybox_links(root: Path, image: ImageDef) -> None:
    if not image.busybox_links:
        return
    binary = root / "usr/bin/busybox"
    applets = busybox_applets(binary.read_bytes())
    made = 0
    for name in applets:
        if name in ("busybox", "[["):
            continue
        where = "usr/sbin" if name in _SBIN else "usr/bin"
        link = root / where / name
        if link.exists() or link.is_symlink():
            continue  # a real tool from a package wins over the applet
        link.symlink_to("/usr/bin/busybox")
        made += 1
    ui.debug(f"busybox: {made} applet links")


def _accounts(root: Path, image: ImageDef) -> None:
    master = root / "usr/share/base-passwd"
    if (master / "passwd.master").exists():
        passwd = (master / "passwd.master").read_text().splitlines()
        group = (master / "group.master").read_text().splitlines()
    else:
        passwd = [
            "root:x:0:0:root:/root:/bin/sh",
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
        ]
        group = ["root:x:0:", "nogroup:x:65534:"]
    members: dict[str, list[str]] = {}
    for u in image.users:
        passwd = [p for p in passwd if p.split(":")[0] != u.name]
        passwd.append(f"{u.name}:x:{u.uid}:{u.gid}::{u.home}:{u.shell}")
        for g in u.groups:
            members.setdefault(g, []).append(u.name)
    known = {g.split(":")[0] for g in group}
    for extra in image.groups:
        if extra.name not in known:
            group.append(f"{extra.name}:x:{extra.gid}:")
            known.add(extra.name)
    for u in image.users:
        if u.name not in known:
            group.append(f"{u.name}:x:{u.gid}:")
            known.add(u.name)
    group = [
        line + ",".join(members.get(line.split(":")[0], [])) if line.endswith(":") else line
        for line in group
    ]
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    # No passwords: accounts are locked; SSH keys are the way in.
    shadow = [f"{p.split(':')[0]}:*:0:0:99999:7:::" for p in passwd]
    (etc / "shadow").write_text("\n".join(shadow) + "\n")
    (etc / "shadow").chmod(0o600)
    for u in image.users:
        home = root / u.home.lstrip("/")
        if not home.exists():
            home.mkdir(parents=True)
            os.chown(home, u.uid, u.gid)
            home.chmod(0o700 if u.uid == 0 else 0o755)


def _copy_overlay(src: Path, root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel = Path(dirpath).relative_to(src)
        (root / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            s, d = Path(dirpath) / name, root / rel / name
            if d.is_symlink() or d.exists():
                d.unlink()
            if s.is_symlink():
                d.symlink_to(os.readlink(s))
            else:
                shutil.copyfile(s, d)
                d.chmod(s.stat().st_mode & 0o7777)
                os.chown(d, 0, 0)


def _remove(root: Path, patterns: tuple[str, ...]) -> None:
    """Delete every path matching a glob (``*`` spans directories)."""
    pats = [p.strip("/") for p in patterns]
    if not pats:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(fnmatch.fnmatchcase(rel, p) for p in pats):
                path = os.path.join(dirpath, name)
                os.unlink(path) if os.path.islink(path) else shutil.rmtree(path)
                dirnames.remove(name)
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(fnmatch.fnmatchcase(rel, p) for p in pats):
                os.unlink(os.path.join(dirpath, name))


def customise(root: Path, image: ImageDef, release: dict[str, str]) -> None:
    """Apply package hooks, accounts, files, links, overlay and removals."""
    have = installed(root)
    for package, fn in sorted(HOOKS.items()):
        if package in have:
            fn(root, image)
    _accounts(root, image)
    for d in image.directories:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for sticky in ("tmp", "var/tmp"):
        if (root / sticky).is_dir():
            (root / sticky).chmod(0o1777)
    for entry in image.files:
        dest = root / entry.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()
        dest.write_bytes(entry.content)
        dest.chmod(entry.mode)
    for path, target in image.symlinks:
        link = root / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    if image.overlay:
        _copy_overlay(image.overlay, root)
    _remove(root, image.remove)
    etc = root / "etc"
    (etc / "distbuild").mkdir(parents=True, exist_ok=True)
    (etc / "distbuild/release").write_text(
        "".join(f"{k}={v}\n" for k, v in sorted(release.items()))
    )
    if not (etc / "hostname").exists():
        (etc / "hostname").write_text(f"{image.name}\n")


__all__ = ["Group", "User", "busybox_applets", "customise"]
