"""Paths inside a root directory, resolved as the target system would see them.

Every file distbuild writes into a root (extraction, customisation, disk
assembly) goes through ``RootDir``: a path is walked component by component
from a descriptor of the root, following the root's own symlinks the way the
kernel would inside a chroot (an absolute link starts again at the root,
``..`` from a link stops at the root) and never the host's. Each step opens
the next directory with ``O_NOFOLLOW`` beneath the previous one and every
write uses ``dir_fd``, so a link swapped in after a check cannot redirect it.

A ``..`` written in the path itself that would climb above the root is an
error, not clamped: a definition that says ``/../../tmp`` means the host.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from distbuild.core.errors import DistbuildError

MAX_LINKS = 40  # what Linux allows one path lookup (ELOOP)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
_CACHED_DIRS = 64
_HINT = "every path is resolved inside the image's root; use paths and links that stay in it"


class RootPathError(DistbuildError):
    """A path cannot be resolved inside its root, or would leave it."""

    def __init__(self, path: str, reason: str, hint: str | None = _HINT) -> None:
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[RootPathError], tuple[str, str, str | None]]:
        return type(self), (self.path, self.reason, self.hint)


class MissingPath(RootPathError):
    """A directory on the way does not exist (and was not to be created)."""


class NotADirectory(RootPathError):
    """A component that must be a directory is something else."""


Part = tuple[str, bool]  # a component and whether the caller wrote it (not a link)


def _split(path: str, written: bool) -> list[Part]:
    return [(p, written) for p in path.split("/") if p not in ("", ".")]


@dataclass
class _Walk:
    """One lookup: the open directories from the root down, and links followed."""

    path: str
    fds: list[int]
    names: list[str] = field(default_factory=list)
    hops: int = 0

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def up(self, written: bool) -> None:
        if not self.names:
            if written:
                raise RootPathError(self.path, "'..' leaves the root")
            return  # a link's '..' at the root stays there, as in a chroot
        os.close(self.fds.pop())
        self.names.pop()

    def link(self, target: str, queue: list[Part]) -> None:
        self.hops += 1
        if self.hops > MAX_LINKS:
            raise RootPathError(self.path, f"more than {MAX_LINKS} symlinks (a loop?)")
        if target.startswith("/"):
            while self.names:
                self.up(False)
        queue[:0] = _split(target, False)

    def down(self, name: str, create: bool, mode: int) -> None:
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                shown = "/" + "/".join([*self.names, name])
                raise MissingPath(self.path, f"{shown} does not exist") from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=self.fd)
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            shown = "/" + "/".join([*self.names, name])
            raise NotADirectory(self.path, f"{shown} is not a directory")
        self.fds.append(os.open(name, _DIR_FLAGS, dir_fd=self.fd))
        self.names.append(name)

    def walk(self, queue: list[Part], create: bool, mode: int) -> None:
        """Descend through ``queue``, every component a directory (links followed)."""
        while queue:
            name, written = queue.pop(0)
            if name == "..":
                self.up(written)
                continue
            try:
                target = os.readlink(name, dir_fd=self.fd)
            except OSError:  # not a link (EINVAL) or missing: down() tells which
                self.down(name, create, mode)
                continue
            self.link(target, queue)


class RootDir:
    """A root directory whose paths are resolved and written beneath it.

    ``cache=True`` (for extraction: thousands of writes into few directories)
    keeps the descriptors of recently used parent directories, keyed by the
    path as written; any change that could give such a path another meaning
    (a link made or removed, an entry removed) forgets them. ``close()`` it.
    """

    def __init__(self, path: Path | str, cache: bool = False) -> None:
        self.path = Path(path)
        self._cache: dict[str, tuple[int, list[str]]] | None = {} if cache else None

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._forget()

    def _forget(self) -> None:
        while self._cache:
            os.close(self._cache.pop(next(iter(self._cache)))[0])

    @contextlib.contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            # What the path itself causes (a name too long, a link swapped in
            # under O_NOFOLLOW...) is the input's fault; a full disk is not.
            if e.errno in _PATH_ERRNOS:
                raise RootPathError(path, e.strerror or str(e)) from None
            raise

    @contextlib.contextmanager
    def _walk(self, path: str) -> Iterator[_Walk]:
        w = _Walk(path, [os.open(self.path, _DIR_FLAGS)])
        try:
            with self._errors(path):
                yield w
        finally:
            w.close()

    def _cached_parent(self, path: str, create: bool, mode: int) -> tuple[int, list[str]] | None:
        """The parent directory of ``path`` from the cache (walked on a miss), if cached."""
        if self._cache is None:
            return None
        parts = _split(path, True)
        if not parts or any(p == ".." for p, _ in parts):
            return None
        key = "/".join(p for p, _ in parts[:-1])
        hit = self._cache.get(key)
        if hit is None:
            with self._walk(path) as w:
                w.walk(parts[:-1], create, mode)
                hit = (os.dup(w.fd), list(w.names))
            if len(self._cache) >= _CACHED_DIRS:
                os.close(self._cache.pop(next(iter(self._cache)))[0])
            self._cache[key] = hit
        return hit

    @contextlib.contextmanager
    def _entry(
        self, path: str, follow: bool = False, create: bool = False, mode: int = 0o755
    ) -> Iterator[tuple[int, str, _Walk]]:
        """The directory (fd) holding ``path``'s last component, and that name."""
        hit = None if follow else self._cached_parent(path, create, mode)
        if hit is not None:
            # Its own descriptor: the body may forget the cache (and close hit's).
            w = _Walk(path, [os.dup(hit[0])], list(hit[1]))
            try:
                with self._errors(path):
                    yield w.fd, _split(path, True)[-1][0], w
            finally:
                w.close()
            return
        with self._walk(path) as w:
            queue = _split(path, True)
            while True:
                if not queue or queue[-1][0] == "..":
                    raise RootPathError(path, "does not name an entry inside the root")
                *parents, (last, _) = queue
                w.walk(parents, create, mode)
                if not follow:
                    break
                try:
                    target = os.readlink(last, dir_fd=w.fd)
                except OSError:
                    break
                queue = []
                w.link(target, queue)
            yield w.fd, last, w

    def resolve(self, path: str, follow: bool = False) -> Path:
        """The host path ``path`` stands for, links resolved inside the root (to read).

        Writes go through the other methods: a host path can be redirected later.
        """
        with self._entry(path, follow) as (_, last, w):
            return self.path.joinpath(*w.names, last)

    def host_path(self, path: str) -> Path:
        """The host path of ``path`` for a tool that walks it itself (depmod, compileall).

        Such a tool follows links with the host's root, so this refuses a path
        the host would resolve elsewhere than the target does.
        """
        inside = self.resolve(path, follow=True)
        host = Path(os.path.realpath(self.path / path.lstrip("/")))
        if host != Path(os.path.realpath(inside)):
            raise RootPathError(
                path,
                f"a link on the way points out of the root (the host would use {host})",
                "make the image's links on this path relative, or drop them",
            )
        return inside

    def lstat(self, path: str, follow: bool = False) -> os.stat_result | None:
        """The entry's stat (of the final link itself unless ``follow``), None if missing."""
        try:
            with self._entry(path, follow) as (fd, last, _):
                return os.stat(last, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, MissingPath, NotADirectory):
            return None

    def mkdirs(self, path: str, mode: int = 0o755) -> None:
        """``mkdir -p`` inside the root (links followed as the target would)."""
        with self._walk(path) as w:
            w.walk(_split(path, True), True, mode)

    def make_dir(
        self,
        path: str,
        mode: int,
        uid: int,
        gid: int,
        *,
        follow: bool = True,
        reown: bool = False,
    ) -> bool:
        """Create the directory ``path`` (and parents) owned by uid:gid; False if it exists.

        ``reown`` sets owner and mode on an existing directory too. Without
        ``follow``, a symlink already at ``path`` is left alone (it stands for
        the directory, as merged /usr's ``bin`` does).
        """
        with self._entry(path, follow=follow, create=True) as (fd, last, _):
            try:
                os.mkdir(last, 0o700, dir_fd=fd)
                made = True
            except FileExistsError:
                st = os.stat(last, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and not follow:
                    return False
                if not stat.S_ISDIR(st.st_mode):
                    raise RootPathError(path, "exists and is not a directory") from None
                made = False
            if made or reown:
                dfd = os.open(last, _DIR_FLAGS, dir_fd=fd)
                try:
                    os.fchown(dfd, uid, gid)
                    os.fchmod(dfd, mode)
                finally:
                    os.close(dfd)
            return made

    def chmod(self, path: str, mode: int) -> None:
        with self._entry(path, follow=True) as (fd, last, _):
            f = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.fchmod(f, mode)
            finally:
                os.close(f)

    def _clear(self, fd: int, last: str, path: str) -> None:
        """Make room for a new non-directory entry: unlink what is there, keep directories."""
        try:
            st = os.stat(last, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise RootPathError(
                path, "is a directory", "remove the directory first, or pick another path"
            )
        os.unlink(last, dir_fd=fd)
        if stat.S_ISLNK(st.st_mode):
            self._forget()  # cached paths through this link meant its target

    def write_file(
        self, path: str, data: bytes | IO[bytes], mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        """Create ``path`` afresh (a link there is replaced, not followed) with ``data``."""
        with self._entry(path, create=True) as (fd, last, _):
            self._clear(fd, last, path)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(last, flags, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f, 1 << 20)
                f.flush()
                os.fchown(out, uid, gid)
                os.fchmod(out, mode)  # after chown, which clears set-id bits

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> None:
        """Make ``path`` a symlink to ``target`` (stored as given: it is the target's path)."""
        with self._entry(path, create=True) as (fd, last, _):
            self._clear(fd, last, path)
            self._forget()  # a new link can give cached paths another meaning
            os.symlink(target, last, dir_fd=fd)
            os.chown(last, uid, gid, dir_fd=fd, follow_symlinks=False)

    def hardlink(self, existing: str, path: str) -> None:
        """Make ``path`` another name of the entry ``existing`` (itself, not what it links to)."""
        with (
            self._entry(existing) as (sfd, sname, _),
            self._entry(path, create=True) as (
                fd,
                last,
                _,
            ),
        ):
            self._clear(fd, last, path)
            try:
                os.link(sname, last, src_dir_fd=sfd, dst_dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise RootPathError(
                    path, f"hard link to {existing}, which does not exist"
                ) from None

    def remove(self, path: str) -> bool:
        """Delete ``path`` (a directory with its contents; a link, not its target)."""
        try:
            with self._entry(path) as (fd, last, _):
                self._forget()
                return remove_at(fd, last)
        except (MissingPath, NotADirectory):
            return False  # nothing there to remove

    def read_bytes(self, path: str) -> bytes:
        """A regular file's bytes, links followed inside the root."""
        with self._entry(path, follow=True) as (fd, last, _):
            f = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            with os.fdopen(f, "rb") as src:
                if not stat.S_ISREG(os.fstat(f).st_mode):
                    raise RootPathError(path, "is not a regular file")
                return src.read()

    def walk(self, path: str = "") -> Iterator[tuple[str, list[str], list[str], int]]:
        """``os.fwalk`` of a directory inside the root: (rel dir, dirs, files, dir fd).

        Links are not followed; symlinks to directories appear in the dirs list.
        """
        with self._walk(path) as w:
            w.walk(_split(path, True), False, 0o755)
            base = "/".join(w.names)
            for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=w.fd):
                rel = os.path.normpath(os.path.join(base, dirpath))
                yield ("" if rel == "." else rel), dirnames, filenames, dfd


def remove_at(fd: int, name: str) -> bool:
    """Delete the entry ``name`` of the directory ``fd``; False if there was none."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)
    return True
