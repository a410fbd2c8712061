"""The channel page: ``<repo>/<channel>/index.html``, for people.

It shows what a subscriber of the channel gets — every release per image and
arch with its date and each file's size and digest — and how to subscribe (the
node's config, the TUF metadata URL, the trust anchor). It is rendered from
the channel's signed metadata as the publisher just wrote it (one consistent
snapshot), with the release index checked against its hash; nodes verify
everything through TUF themselves.

The page is not a TUF target: it is a convenience next to ``metadata/`` and
``targets/``, written atomically after every publish and promote.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from distbuild.channel.hooks import ReleaseEvent
from distbuild.channel.repo import ChannelRepo
from distbuild.channel.tufapi import TargetFile
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import write_atomic
from distbuild.core.releases import INDEX_TARGET, ReleaseIndex, iso

PAGE = "index.html"
TEMPLATES = Path(__file__).parent / "templates"
# Releases listed per image; older ones stay in releases.json (the page stays small
# however long a channel's history is).
SHOWN = 20
# The kind a person most likely came for, first.
_KIND_ORDER = ("disk", "root", "oci", "sbom", "lock", "boot-lock", "sigstore-bundle")


@dataclass(frozen=True)
class FileRow:
    name: str
    kind: str
    size: int
    sha256: str
    href: str  # relative to the page


@dataclass(frozen=True)
class ReleaseRow:
    version: str
    published: str
    files: tuple[FileRow, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class ArchSection:
    arch: str
    releases: tuple[ReleaseRow, ...]  # newest first


@dataclass(frozen=True)
class ImageSection:
    image: str
    arches: tuple[ArchSection, ...]
    total: int  # releases the channel holds for this image
    shown: int


@dataclass(frozen=True)
class PageData:
    channel: str
    description: str
    root_version: int
    root_sha256: str  # of metadata/1.root.json, the anchor a node is installed with
    timestamp_version: int
    images: tuple[ImageSection, ...]
    registry: str | None = None  # REPOSITORY reference (host/name) when images are pushed
    registry_tag: str | None = None
    arches: tuple[str, ...] = field(default=())


class _Signed:
    """One consistent state of a channel, read from its metadata files as written.

    timestamp → its snapshot → targets → the hash bins, by the versions each
    names (consistent snapshots: a concurrent publish writes new files and
    leaves these alone). Signatures are not checked again: the publisher reads
    what it has just signed; nodes check everything through TUF.
    """

    def __init__(self, repo: ChannelRepo) -> None:
        self.repo = repo
        self.timestamp = repo.read("timestamp").signed
        self.snapshot = repo.read("snapshot", self.timestamp.snapshot_meta.version).signed
        self.targets = repo.read("targets", self._version("targets")).signed
        delegations = self.targets.delegations
        self.bins = delegations.succinct_roles if delegations is not None else None
        self._roles: dict[str, Any] = {"targets": self.targets}

    def _version(self, role: str) -> int:
        meta = self.snapshot.meta.get(f"{role}.json")
        if meta is None:
            raise DistbuildError(f"channel {self.repo.name}: the snapshot does not list {role}")
        return int(meta.version)

    def target(self, path: str) -> TargetFile | None:
        role = self.bins.get_role_for_target(path) if self.bins is not None else "targets"
        if role not in self._roles:
            self._roles[role] = self.repo.read(role, self._version(role)).signed
        found: TargetFile | None = self._roles[role].targets.get(path)
        return found

    def target_bytes(self, path: str) -> bytes | None:
        info = self.target(path)
        if info is None:
            return None
        sha = info.hashes["sha256"]
        data = self.repo.target_file(path, sha).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha or len(data) != info.length:
            raise DistbuildError(
                f"channel {self.repo.name}: target {path} does not match its metadata",
                hint="the repository is damaged; restore it from a backup",
            )
        return data


def collect(
    repo: ChannelRepo,
    description: str = "",
    *,
    registry: str | None = None,
    registry_tag: str | None = None,
    shown: int = SHOWN,
) -> PageData:
    """Read the channel's current signed state into what the page shows."""
    repo.require()
    state = _Signed(repo)
    raw = state.target_bytes(INDEX_TARGET)
    index = ReleaseIndex.from_json(raw) if raw is not None else ReleaseIndex(repo.name)
    images = tuple(_image_section(state, index, image, shown) for image in index.images())
    anchor = hashlib.sha256((repo.metadata / "1.root.json").read_bytes()).hexdigest()
    arches = sorted({a.arch for i in images for a in i.arches}, key=_arch_key)
    return PageData(
        channel=repo.name,
        description=description,
        root_version=int(repo.root().signed.version),
        root_sha256=anchor,
        timestamp_version=int(state.timestamp.version),
        images=images,
        registry=registry,
        registry_tag=registry_tag,
        arches=tuple(arches),
    )


def _image_section(state: _Signed, index: ReleaseIndex, image: str, shown: int) -> ImageSection:
    """The newest ``shown`` releases of one image, by arch."""
    releases = index.of(image)
    by_arch: dict[str, list[ReleaseRow]] = {}
    for release in releases[:shown]:
        for arch in release.arches:
            files = sorted(
                (_file_row(state, path) for path in release.target_paths(arch)),
                key=lambda f: (_kind_rank(f.kind), f.name),
            )
            by_arch.setdefault(arch, []).append(
                ReleaseRow(release.version, iso(release.published), tuple(files))
            )
    return ImageSection(
        image,
        tuple(ArchSection(a, tuple(rows)) for a, rows in _arch_order(by_arch)),
        # releases.json lists only the newest releases; total counts them all.
        index.total(image),
        min(len(releases), shown),
    )


def _file_row(state: _Signed, path: str) -> FileRow:
    """One file of a release, as its signed target describes it."""
    t = state.target(path)
    if t is None:
        raise DistbuildError(
            f"channel {state.repo.name}: {path} is in releases.json but not signed",
            hint="the repository is damaged; restore it from a backup",
        )
    sha = t.hashes["sha256"]
    directory, _, base = path.rpartition("/")
    return FileRow(
        base, str(t.custom.get("kind", "")), t.length, sha, f"targets/{directory}/{sha}.{base}"
    )


def _kind_rank(kind: str) -> int:
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def _arch_key(arch: str) -> tuple[int, str]:
    from distbuild.core.arch import ARCHES

    names = list(ARCHES)
    return (names.index(arch) if arch in names else len(names), arch)


def _arch_order(by_arch: dict[str, list[ReleaseRow]]) -> list[tuple[str, list[ReleaseRow]]]:
    return [(a, by_arch[a]) for a in sorted(by_arch, key=_arch_key)]


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["size"] = human_size
    return env


def render(data: PageData) -> str:
    """The HTML of the channel page."""
    return _environment().get_template("index.html.j2").render(page=data)


def write_page(
    repo_root: Path,
    channel: str,
    description: str = "",
    *,
    registry: str | None = None,
    registry_tag: str | None = None,
) -> Path:
    """Render and atomically write ``<repo_root>/<channel>/index.html``."""
    repo = ChannelRepo(repo_root, channel)
    data = collect(repo, description, registry=registry, registry_tag=registry_tag)
    path = repo.path / PAGE
    write_atomic(path, render(data).encode())
    return path


def page_step(event: ReleaseEvent) -> None:
    """The release step that writes the channel's page after a publish or promote."""
    try:
        write_page(
            event.repo,
            event.channel.name,
            event.channel.description,
            registry_tag=event.channel.registry_tag,
        )
    except DistbuildError as e:
        raise DistbuildError(
            f"{event.image} {event.version} is in channel {event.channel.name}, "
            f"but its page was not written: {e.message}",
            hint=e.hint,
        ) from None
