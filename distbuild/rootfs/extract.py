"""Unpacking packages into a root directory without running any of their code.

The tree is merged-/usr (as Debian 12 is): ``bin``, ``sbin`` and ``lib*``
are symlinks into ``usr``, and package paths are mapped onto them. A dpkg
status database is written from the control files so tools (and SBOMs) see
what is installed.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from distbuild import ui
from distbuild.errors import DistbuildError
from distbuild.rootfs import deb
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import Lock, LockedPackage

MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def usr_path(name: str) -> str:
    """Map a package path onto the merged-/usr tree."""
    name = name.removeprefix("./").lstrip("/")
    first, _, rest = name.partition("/")
    if first in MERGED:
        return f"usr/{first}/{rest}".rstrip("/") if rest else f"usr/{first}"
    return name


class Root:
    """A root directory being filled; resolves paths without leaving it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dirs: dict[str, str] = {"": str(path)}

    def resolve(self, rel: str, follow_last: bool = False) -> str:
        """The host path of ``rel`` inside the root, following symlinks inside it."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise DistbuildError(f"refusing path with '..': {rel}")
        last = parts[-1] if parts and not follow_last else None
        dir_parts = parts[:-1] if last is not None else parts
        current: list[str] = []
        hops = 0
        queue = list(dir_parts)
        while queue:
            part = queue.pop(0)
            if part == "..":
                if current:
                    current.pop()
                continue
            if part == ".":
                continue
            candidate = [*current, part]
            host = os.path.join(str(self.path), *candidate)
            if os.path.islink(host):
                hops += 1
                if hops > 40:
                    raise DistbuildError(f"too many symlinks resolving {rel}")
                target = os.readlink(host)
                if target.startswith("/"):
                    current = []
                queue = [p for p in target.split("/") if p] + queue
                continue
            current = candidate
        base = os.path.join(str(self.path), *current)
        return os.path.join(base, last) if last is not None else base


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        return
    os.unlink(path)


def extract_package(root: Root, path: Path) -> list[str]:
    """Unpack one .deb's data; return the package's paths as dpkg lists them."""
    listed = []
    with deb.open_tar(path, "data") as tar:
        for ti in tar:
            orig = "/" + ti.name.removeprefix("./").strip("/")
            listed.append("/." if orig == "/" else orig)
            rel = usr_path(ti.name)
            if not rel:
                continue
            dest = root.resolve(rel)
            if ti.isdir():
                if os.path.islink(dest):
                    continue  # a merged-/usr link stands for this directory
                os.makedirs(dest, exist_ok=True)
                os.chown(dest, ti.uid, ti.gid)
                os.chmod(dest, ti.mode)
            elif ti.isreg():
                _remove(dest)
                src = tar.extractfile(ti)
                assert src is not None
                with open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.chown(dest, ti.uid, ti.gid)
                os.chmod(dest, ti.mode)
            elif ti.issym():
                _remove(dest)
                os.symlink(ti.linkname, dest)
                os.lchown(dest, ti.uid, ti.gid)
            elif ti.islnk():
                _remove(dest)
                os.link(root.resolve(usr_path(ti.linkname)), dest)
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
    root = Root(root_dir)
    info = root_dir / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    status = []
    with ui.progress("extract", len(lock.packages)) as bar:
        for pkg in sorted(lock.packages, key=lambda p: p.name):
            path = cache.verified(pkg)  # hash check before a byte is unpacked
            ctl = deb.control(path)
            listed = extract_package(root, path)
            fields = ctl.get("control", b"").decode(errors="replace")
            status.append(_status_paragraph(fields))
            qual = _qualified(pkg, deb.parse_fields(fields))
            (info / f"{qual}.list").write_text("\n".join(listed) + "\n")
            for extra in ("md5sums", "conffiles"):
                if extra in ctl:
                    (info / f"{qual}.{extra}").write_bytes(ctl[extra])
            bar.update(1)
    # lib64 and friends appear only on arches whose packages use them.
    for name in MERGED[3:]:
        if (root_dir / "usr" / name).is_dir() and not (root_dir / name).exists():
            (root_dir / name).symlink_to(f"usr/{name}")
    dpkg = root_dir / "var/lib/dpkg"
    (dpkg / "status").write_text("\n".join(status))
    (dpkg / "available").touch()
    (dpkg / "arch").write_text(debian_arch + "\n")


def _qualified(pkg: LockedPackage, fields: dict[str, str]) -> str:
    if fields.get("Multi-Arch") == "same":
        return f"{pkg.name}:{pkg.arch}"
    return pkg.name
