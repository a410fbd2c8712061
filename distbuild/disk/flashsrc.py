"""Where ``distbuild flash`` gets a board's disk image and its bmap.

* a build (its directory or build.json): the ``disk`` and ``disk-bmap``
  artifacts of the board (and arch) in the build record;
* a disk image file: its bmap beside it (``<image>.bmap``) or given, else none
  (then every byte is written);
* a channel URL (``https://host/path/<channel>``): the release index and the
  board's two files fetched through TUF from the trust root given, each into
  a private temporary directory and checked against its signed length and
  sha256 before anything reads it;
* a channel name with ``--repo``: the same from a local channel repository,
  trusting the channel's first root.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions

from distbuild.core import bmap, names
from distbuild.core.errors import FetchError, UsageError
from distbuild.core.releases import INDEX_TARGET, Release, ReleaseIndex
from distbuild.node.http import Http
from distbuild.node.tufclient import ChannelClient, Refused, Target
from distbuild.record import RECORD, load_record

DISK_KIND = "disk"
BMAP_KIND = "disk-bmap"
DISK_FILE = "disk.img"
BMAP_SUFFIX = ".bmap"


@dataclass(frozen=True)
class Source:
    """An image to flash, its bmap (None: write every byte) and what it is, for messages."""

    image: Path
    bmap: bmap.Bmap | None
    label: str


@dataclass(frozen=True)
class Wanted:
    """What the command line asked for: board, arch, image and release (None: the only one)."""

    board: str | None = None
    arch: str | None = None
    image: str | None = None
    release: str | None = None


def _one(what: str, choices: list[str], given: str | None, flag: str, where: str) -> str:
    if given is not None:
        if given not in choices:
            have = ", ".join(choices) or "none"
            raise UsageError(f"{where} has no {what} {given!r}", hint=f"{what}s there: {have}")
        return given
    if len(choices) != 1:
        have = ", ".join(choices) or "none"
        raise UsageError(f"{where}: which {what}? ({have})", hint=f"pass {flag}")
    return choices[0]


def from_image(image: Path, bmap_path: Path | None) -> Source:
    """A disk image file and its bmap: the one given, else ``<image>.bmap`` if present."""
    beside = image.with_name(image.name + BMAP_SUFFIX)
    path = bmap_path or (beside if beside.is_file() else None)
    return Source(image, bmap.load(path) if path else None, str(image))


def from_build(build: Path, wanted: Wanted) -> Source:
    """The board's disk image in a build, with its bmap."""
    record, base = load_record(build)
    disks = record.find(DISK_KIND)
    where = f"the build {base}"
    arch = _one("arch", sorted({d.arch for d in disks}), wanted.arch, "--arch", where)
    boards = sorted({d.board for d in record.find(DISK_KIND, arch) if d.board})
    board = _one("board", boards, wanted.board, "--board", f"{where} for {arch}")
    (disk,) = record.find(DISK_KIND, arch, board=board)
    maps = record.find(BMAP_KIND, arch, board=board)
    if len(maps) != 1:
        raise UsageError(
            f"{where} has no bmap for the {board} disk",
            hint="rebuild it (the disk output writes disk.img.bmap), or pass the image file",
        )
    label = f"{record.image} {record.version} {arch} {board}"
    return Source(base / disk.path, bmap.load(base / maps[0].path), label)


def is_build(path: Path) -> bool:
    return path.is_dir() or path.name == RECORD


# --- channels --------------------------------------------------------------------------------


def split_url(url: str) -> tuple[str, str]:
    """``https://host/path/stable`` → (``https://host/path``, ``stable``)."""
    base, _, channel = url.rstrip("/").rpartition("/")
    if "://" not in base:
        raise UsageError(
            f"{url!r} is not a channel URL", hint="e.g. https://updates.example.org/stable"
        )
    return base, names.check_name(channel, names.CHANNEL, where=url)


def pick_release(index: ReleaseIndex, wanted: Wanted, where: str) -> tuple[Release, str]:
    """The newest release (and its arch) with a disk image for the board asked for."""
    images = sorted({r.image for r in index.releases})
    image = _one("image", images, wanted.image, "--image", where)
    releases = index.of(image)
    if wanted.release is not None:
        found = index.find(image, wanted.release)
        if found is None:
            have = ", ".join(r.version for r in releases)
            raise UsageError(f"{where} has no {image} {wanted.release}", hint=f"releases: {have}")
        releases = [found]
    with_disks = [r for r in releases if _disk_arches(r, wanted.board)]
    if not with_disks:
        boards = sorted({b for r in releases for b in r.board_names()})
        raise UsageError(
            f"{where} has no {image} disk image for board {wanted.board}",
            hint=f"boards there: {', '.join(boards) or 'none'}",
        )
    arches = sorted({a for r in with_disks for a in _disk_arches(r, wanted.board)})
    arch = _one("arch", arches, wanted.arch, "--arch", f"{where}: {image} board disks")
    for r in with_disks:  # newest first
        if arch in _disk_arches(r, wanted.board):
            return r, arch
    raise UsageError(f"{where} has no {image} release for {arch}")  # unreachable: arch is listed


def _disk_arches(release: Release, board: str | None) -> list[str]:
    """The arches ``release`` has a disk image for (``board``'s, or any board's)."""
    return [
        a
        for a, boards in release.boards.items()
        if any(release.board_target(a, b, DISK_KIND) for b in boards if board in (None, b))
    ]


def _download(http: Http, target: Target, dest: Path) -> None:
    """``target`` into ``dest``, refused unless its length and sha256 are the signed ones."""
    digest = hashlib.sha256()
    got = 0
    body = http.open(target.url, expect=target.length)
    try:
        with dest.open("wb") as f:
            for chunk in http.chunks(body, target.length + 1):
                got += len(chunk)
                digest.update(chunk)
                f.write(chunk)
    finally:
        body.close()
    if got != target.length or digest.hexdigest() != target.sha256:
        raise FetchError(
            f"{target.path}: the server's bytes are not the ones the channel signed "
            f"({got} bytes, {target.length} signed); refused, nothing written",
            hint="the server or something between it and you is damaged or tampering",
        )


def _target(client: ChannelClient, path: str, board: str) -> Target:
    target = client.target(path)
    signed = target.custom.get("board")
    if signed is not None and signed != board:
        raise Refused(f"{path} is signed for board {signed!r}, not {board!r}")
    return target


def _board_paths(release: Release, arch: str, wanted: Wanted, where: str) -> tuple[str, str, str]:
    """(board, disk target, bmap target) of the board asked for (or the only one)."""
    board = _one("board", release.board_names(arch), wanted.board, "--board", where)
    disk_path = release.board_target(arch, board, DISK_KIND)
    bmap_path = release.board_target(arch, board, BMAP_KIND)
    if disk_path is None or bmap_path is None:
        raise UsageError(
            f"{where}: board {board} has no disk image with a bmap",
            hint=f"publish a build made with 'distbuild image --board {board}'",
        )
    return board, disk_path, bmap_path


@contextlib.contextmanager
def from_channel(url: str, trust_root: Path, wanted: Wanted) -> Iterator[Source]:
    """The board's disk image and bmap of a channel release, verified, in a temp dir."""
    base, channel = split_url(url)
    with tempfile.TemporaryDirectory(prefix="distbuild-flash-") as tmp:
        work = Path(tmp)
        client = ChannelClient(base, channel, work / "metadata", trust_root, Http())
        index = client.refresh()
        release, arch = pick_release(index, wanted, f"channel {channel}")
        where = f"channel {channel}: {release.image} {release.version} {arch}"
        board, disk_path, bmap_path = _board_paths(release, arch, wanted, where)
        disk = _target(client, disk_path, board)
        mapping = _target(client, bmap_path, board)
        _download(client.http, mapping, work / "disk.img.bmap")
        parsed = bmap.load(work / "disk.img.bmap")
        _download(client.http, disk, work / DISK_FILE)
        yield Source(work / DISK_FILE, parsed, f"{where} {board}")


@contextlib.contextmanager
def from_repo(repo: Path, channel: str, wanted: Wanted) -> Iterator[Source]:
    """As :func:`from_channel`, from a local channel repository, trusting its first root
    (the publisher's own files, read by the same TUF client as ``channel show``)."""
    from distbuild.channel.repo import ChannelRepo
    from distbuild.channel.view import open_updater

    with tempfile.TemporaryDirectory(prefix="distbuild-flash-") as tmp:
        work = Path(tmp)
        updater = open_updater(ChannelRepo(repo, channel), work)
        with _tuf_refusals(channel):
            updater.refresh()
            info = updater.get_targetinfo(INDEX_TARGET)
            index = ReleaseIndex(channel)
            if info is not None:
                index = ReleaseIndex.from_json(Path(updater.download_target(info)).read_bytes())
            release, arch = pick_release(index, wanted, f"channel {channel}")
            where = f"channel {channel}: {release.image} {release.version} {arch}"
            board, disk_path, bmap_path = _board_paths(release, arch, wanted, where)
            files = {}
            for path, name in ((bmap_path, "disk.img.bmap"), (disk_path, DISK_FILE)):
                target = updater.get_targetinfo(path)
                if target is None or target.custom.get("board", board) != board:
                    raise Refused(
                        f"channel {channel} lists {path} but does not sign it for {board}"
                    )
                files[name] = Path(updater.download_target(target, str(work / name)))
        yield Source(files[DISK_FILE], bmap.load(files["disk.img.bmap"]), f"{where} {board}")


@contextlib.contextmanager
def _tuf_refusals(channel: str) -> Iterator[None]:
    try:
        yield
    except (exceptions.RepositoryError, exceptions.DownloadError) as e:
        raise Refused(
            f"channel {channel} fails TUF verification: {type(e).__name__}: {e}",
            hint="the channel's files are damaged or tampered with: restore or republish them",
        ) from None
