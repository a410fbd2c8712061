"""Customising an unpacked root in Python, in place of maintainer scripts.

Maintainer scripts are target code, so they never run; the few effects an
image needs from them (the CA bundle, busybox applet links, users) are done
here, followed by the image definition's own files, links and overlay.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from distbuild.core import ui
from distbuild.core.errors import DistbuildError, RecipeError
from distbuild.model.image import Group, ImageDef, User
from distbuild.rootfs.rootpath import RootDir, RootPathError, remove_at

Hook = Callable[[Path, ImageDef], None]
HOOKS: dict[str, Hook] = {}


def hook(package: str) -> Callable[[Hook], Hook]:
    def register(fn: Hook) -> Hook:
        HOOKS[package] = fn
        return fn

    return register


def installed(tree: RootDir) -> set[str]:
    status = "var/lib/dpkg/status"
    if tree.lstat(status, follow=True) is None:
        return set()
    return {
        line.split(":", 1)[1].strip()
        for line in tree.read_bytes(status).decode(errors="replace").splitlines()
        if line.startswith("Package:")
    }


@hook("ca-certificates")
def ca_bundle(root: Path, image: ImageDef) -> None:
    """What update-ca-certificates would write: one PEM bundle of Mozilla's CAs."""
    tree = RootDir(root)
    base = "usr/share/ca-certificates"
    found = tree.lstat(base, follow=True)
    certs: list[PurePosixPath] = []
    if found is not None and stat.S_ISDIR(found.st_mode):
        for rel, _, files, _ in tree.walk(base):
            certs += [PurePosixPath(rel, f) for f in files if f.endswith(".crt")]
    # The root's own links are followed inside it: a .crt linking out reads the root's file.
    bundle = b"".join(tree.read_bytes(str(c)).rstrip(b"\n") + b"\n" for c in sorted(certs))
    tree.mkdirs("etc/ssl/certs")
    tree.write_file("etc/ssl/certs/ca-certificates.crt", bundle, 0o644)
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
    tree = RootDir(root)
    applets = busybox_applets(tree.read_bytes("usr/bin/busybox"))
    made = 0
    for name in applets:
        if name in ("busybox", "[[") or "/" in name or name in (".", ".."):
            continue
        link = f"{'usr/sbin' if name in _SBIN else 'usr/bin'}/{name}"
        if tree.lstat(link) is not None:
            continue  # a real tool from a package wins over the applet
        tree.symlink(link, "/usr/bin/busybox")
        made += 1
    ui.debug(f"busybox: {made} applet links")


@contextlib.contextmanager
def _entry(image: ImageDef, entry: str) -> Iterator[None]:
    """Report a path that cannot be made inside the root at its definition line."""
    try:
        yield
    except RootPathError as e:
        where, key = image.locate(entry)
        raise RecipeError(e.message, e.hint, where=where or str(image.path), key=key) from None


def _accounts(tree: RootDir, image: ImageDef) -> None:
    master = "usr/share/base-passwd"
    if tree.lstat(f"{master}/passwd.master", follow=True) is not None:
        passwd = tree.read_bytes(f"{master}/passwd.master").decode().splitlines()
        group = tree.read_bytes(f"{master}/group.master").decode().splitlines()
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
    tree.mkdirs("etc")
    tree.write_file("etc/passwd", ("\n".join(passwd) + "\n").encode())
    tree.write_file("etc/group", ("\n".join(group) + "\n").encode())
    # No passwords: accounts are locked; SSH keys are the way in.
    shadow = [f"{p.split(':')[0]}:*:0:0:99999:7:::" for p in passwd]
    tree.write_file("etc/shadow", ("\n".join(shadow) + "\n").encode(), 0o600)
    for i, u in enumerate(image.users):
        with _entry(image, f"users:{i}"):
            tree.make_dir(u.home, 0o700 if u.uid == 0 else 0o755, u.uid, u.gid)


def _overlay_entries(src: Path, image: ImageDef) -> list[tuple[str, os.stat_result]]:
    """Every entry of the overlay (sorted, parents first), refusing special files.

    Only lstat here: a FIFO or device is refused before anything opens it.
    """
    entries = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            if not (
                stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)
            ):
                where, key = image.locate("overlay")
                raise RecipeError(
                    f"{path} is a {_kind(st.st_mode)}: the overlay may hold only files, "
                    "directories and symlinks",
                    hint="remove it from the overlay, or create it on the node at run time",
                    where=where or str(image.path),
                    key=key,
                )
            entries.append((str(path.relative_to(src)), st))
    return entries


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device")]
    kinds.append((stat.S_ISBLK, "block device"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _copy_overlay(src: Path, tree: RootDir, image: ImageDef) -> None:
    for rel, st in _overlay_entries(src, image):
        host = src / rel
        with _entry(image, "overlay"):
            if stat.S_ISDIR(st.st_mode):
                tree.mkdirs(rel)
            elif stat.S_ISLNK(st.st_mode):
                tree.symlink(rel, os.readlink(host))
            else:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                with os.fdopen(os.open(host, flags), "rb") as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since lstat
                        raise RootPathError(str(host), "is no longer a regular file")
                    tree.write_file(rel, f, st.st_mode & 0o7777)


def _remove(tree: RootDir, image: ImageDef) -> None:
    """Delete every path matching a glob (``*`` spans directories).

    A plain path is resolved like any other (its parents' links followed
    inside the root); a glob matches the tree as it lies, links not followed.
    """
    globs = []
    for i, pattern in enumerate(image.remove):
        if any(c in pattern for c in "*?["):
            globs.append(os.path.normpath(pattern.strip("/")))
        else:
            with _entry(image, f"remove:{i}"):
                tree.remove(pattern)
    if not globs:
        return
    for rel_dir, dirnames, filenames, dfd in tree.walk():
        for name in sorted(dirnames + filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if any(fnmatch.fnmatchcase(rel, p) for p in globs):
                remove_at(dfd, name)
                if name in dirnames:
                    dirnames.remove(name)


def customise(root: Path, image: ImageDef, release: dict[str, str]) -> None:
    """Apply package hooks, accounts, files, links, overlay and removals."""
    tree = RootDir(root)
    have = installed(tree)
    for package, fn in sorted(HOOKS.items()):
        if package in have:
            fn(root, image)
    _accounts(tree, image)
    for i, d in enumerate(image.directories):
        with _entry(image, f"directories:{i}"):
            tree.mkdirs(d)
    for sticky in ("tmp", "var/tmp"):
        found = tree.lstat(sticky, follow=True)
        if found is not None and stat.S_ISDIR(found.st_mode):
            tree.chmod(sticky, 0o1777)
    for entry in image.files:
        with _entry(image, f"files:{entry.path}"):
            tree.write_file(entry.path, entry.content, entry.mode)
    for path, target in image.symlinks:
        with _entry(image, f"symlinks:{path}"):
            tree.symlink(path, target)
    if image.overlay:
        _copy_overlay(image.overlay, tree, image)
    _remove(tree, image)
    tree.mkdirs("etc/distbuild")
    text = "".join(f"{k}={v}\n" for k, v in sorted(release.items()))
    tree.write_file("etc/distbuild/release", text.encode())
    if tree.lstat("etc/hostname") is None:
        tree.write_file("etc/hostname", f"{image.name}\n".encode())


__all__ = ["Group", "User", "busybox_applets", "customise"]
