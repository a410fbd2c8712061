"""Unpacking packages into a root directory without running any of their code.

The tree is merged-/usr (as Debian 12 is): ``bin``, ``sbin`` and ``lib*``
are symlinks into ``usr``, and package paths are mapped onto them. A dpkg
status database is written from the control files so tools (and SBOMs) see
what is installed.
"""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path

from distbuild.core import ui
from distbuild.core.errors import DistbuildError
from distbuild.rootfs import deb
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import Lock, LockedPackage
from distbuild.rootfs.rootpath import RootDir

MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def usr_path(name: str) -> str:
    """Map a package path onto the merged-/usr tree."""
    name = name.removeprefix("./").lstrip("/")
    first, _, rest = name.partition("/")
    if first in MERGED:
        return f"usr/{first}/{rest}".rstrip("/") if rest else f"usr/{first}"
    return name


def extract_package(root: RootDir, path: Path) -> list[str]:
    """Unpack one .deb's data; return the package's paths as dpkg lists them.

    Every member goes through ``root`` (links resolved inside it, writes
    beneath it): a package cannot place a file outside the root.
    """
    listed = []
    with deb.open_tar(path, "data") as tar:
        for ti in tar:
            orig = "/" + ti.name.removeprefix("./").strip("/")
            listed.append("/." if orig == "/" else orig)
            rel = usr_path(ti.name)
            parts = [p for p in rel.split("/") if p not in ("", ".")]
            if not parts:
                continue  # the root itself
            if ".." in parts:
                raise DistbuildError(
                    f"{path.name}: refusing member with '..': {ti.name}",
                    hint="the package is malformed or hostile; check the lock and the mirror",
                )
            if ti.isdir():
                root.make_dir(rel, ti.mode, ti.uid, ti.gid, follow=False, reown=True)
            elif ti.isreg():
                src = tar.extractfile(ti)
                assert src is not None
                root.write_file(rel, src, ti.mode, ti.uid, ti.gid)
            elif ti.issym():
                root.symlink(rel, ti.linkname, ti.uid, ti.gid)
            elif ti.islnk():
                root.hardlink(usr_path(ti.linkname), rel)
            else:
                kind = {
                    tarfile.CHRTYPE: "char device",
                    tarfile.BLKTYPE: "block device",
                    tarfile.FIFOTYPE: "fifo",
                }.get(ti.type, "special file")
                ui.debug(f"skipping {kind} {orig} in {path.name}")
    return listed


def _status_paragraph(fields_text: str) -> str:
    lines = fields_text.strip().splitlines()
    out = []
    for line in lines:
        out.append(line)
        if line.startswith("Package:"):
            out.append("Status: install ok installed")
    return "\n".join(out) + "\n"


def populate(root_dir: Path, lock: Lock, cache: DebCache, debian_arch: str) -> None:
    """Create the merged-/usr skeleton and unpack every locked package."""
    root_dir.mkdir(parents=True, exist_ok=True)
    for d in ("usr/bin", "usr/sbin", "usr/lib"):
        (root_dir / d).mkdir(parents=True, exist_ok=True)
    for name in MERGED[:3]:
        link = root_dir / name
        if not link.is_symlink():
            link.symlink_to(f"usr/{name}")
    # Cached parent descriptors: extraction writes thousands of files into few directories.
    with RootDir(root_dir, cache=True) as root:
        _unpack_all(root, lock, cache, debian_arch)


def _unpack_all(root: RootDir, lock: Lock, cache: DebCache, debian_arch: str) -> None:
    info = "var/lib/dpkg/info"
    root.mkdirs(info)
    status = []
    with ui.progress("extract", len(lock.packages)) as bar:
        for pkg in sorted(lock.packages, key=lambda p: p.name):
            path = cache.verified(pkg)  # hash check before a byte is unpacked
            ctl = deb.control(path)
            listed = extract_package(root, path)
            fields = ctl.get("control", b"").decode(errors="replace")
            status.append(_status_paragraph(fields))
            qual = _qualified(pkg, deb.parse_fields(fields))
            root.write_file(f"{info}/{qual}.list", ("\n".join(listed) + "\n").encode())
            for extra in ("md5sums", "conffiles"):
                if extra in ctl:
                    root.write_file(f"{info}/{qual}.{extra}", ctl[extra])
            bar.update(1)
    # lib64 and friends appear only on arches whose packages use them.
    for name in MERGED[3:]:
        found = root.lstat(f"usr/{name}", follow=True)
        if found and stat.S_ISDIR(found.st_mode) and root.lstat(name) is None:
            root.symlink(name, f"usr/{name}")
    root.write_file("var/lib/dpkg/status", "\n".join(status).encode())
    root.write_file("var/lib/dpkg/available", b"")
    root.write_file("var/lib/dpkg/arch", f"{debian_arch}\n".encode())


def _qualified(pkg: LockedPackage, fields: dict[str, str]) -> str:
    if fields.get("Multi-Arch") == "same":
        return f"{pkg.name}:{pkg.arch}"
    return pkg.name
