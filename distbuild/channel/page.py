"""The channel page: ``<repo>/<channel>/index.html``, for people.

It shows what a subscriber of the channel gets — every release per image and
arch with its date and each file's size and digest — and how to subscribe (the
node's config, the TUF metadata URL, the trust anchor). The data is read back
through a real TUF client (:func:`distbuild.channel.view.open_updater`), so the
page never shows a release that a node would refuse.

The page is not a TUF target: it is a convenience next to ``metadata/`` and
``targets/``, written atomically after every publish and promote.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from tuf.api import exceptions

from distbuild.channel.hooks import ReleaseEvent, after_release
from distbuild.channel.releases import INDEX_TARGET, ReleaseIndex, iso
from distbuild.channel.repo import ChannelRepo
from distbuild.channel.view import open_updater
from distbuild.errors import DistbuildError
from distbuild.rootfs.lock import write_atomic

PAGE = "index.html"
TEMPLATES = Path(__file__).parent / "templates"
# Releases listed per image; older ones stay in releases.json (the page stays small
# however long a channel's history is).
SHOWN = 20
# The kind a person most likely came for, first.
_KIND_ORDER = ("disk", "root", "oci", "sbom", "lock", "sigstore-bundle")


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


def collect(
    repo: ChannelRepo,
    description: str = "",
    *,
    registry: str | None = None,
    registry_tag: str | None = None,
    shown: int = SHOWN,
) -> PageData:
    """Read the channel through a fresh TUF client into what the page shows."""
    with tempfile.TemporaryDirectory(prefix="distbuild-page-") as tmp:
        updater = open_updater(repo, Path(tmp))
        try:
            updater.refresh()
            info = updater.get_targetinfo(INDEX_TARGET)
            index = (
                ReleaseIndex.from_json(Path(updater.download_target(info)).read_bytes())
                if info is not None
                else ReleaseIndex(repo.name)
            )
            images = []
            for image in index.images():
                releases = index.of(image)
                by_arch: dict[str, list[ReleaseRow]] = {}
                for release in releases[:shown]:
                    for arch in release.arches:
                        files = []
                        for path in release.target_paths(arch):
                            t = updater.get_targetinfo(path)
                            if t is None:
                                raise exceptions.RepositoryError(f"{path} is listed but not signed")
                            sha = t.hashes["sha256"]
                            directory, _, base = path.rpartition("/")
                            files.append(
                                FileRow(
                                    base,
                                    str(t.custom.get("kind", "")),
                                    t.length,
                                    sha,
                                    f"targets/{directory}/{sha}.{base}",
                                )
                            )
                        files.sort(key=lambda f: (_kind_rank(f.kind), f.name))
                        by_arch.setdefault(arch, []).append(
                            ReleaseRow(release.version, iso(release.published), tuple(files))
                        )
                images.append(
                    ImageSection(
                        image,
                        tuple(ArchSection(a, tuple(rows)) for a, rows in _arch_order(by_arch)),
                        len(releases),
                        min(len(releases), shown),
                    )
                )
            meta = Path(tmp) / "metadata"
            root_version = int(json.loads((meta / "root.json").read_bytes())["signed"]["version"])
            timestamp_version = int(
                json.loads((meta / "timestamp.json").read_bytes())["signed"]["version"]
            )
        except exceptions.ExpiredMetadataError as e:
            raise DistbuildError(
                f"channel {repo.name}: {e}",
                hint=f"re-sign it: distbuild channel refresh --channel {repo.name}",
            ) from None
        except (exceptions.RepositoryError, exceptions.DownloadError) as e:
            raise DistbuildError(
                f"channel {repo.name} fails TUF verification: {e}",
                hint="restore the channel from a backup, or republish into a new one",
            ) from None
    anchor = hashlib.sha256((repo.metadata / "1.root.json").read_bytes()).hexdigest()
    arches = sorted({a.arch for i in images for a in i.arches}, key=_arch_key)
    return PageData(
        channel=repo.name,
        description=description,
        root_version=root_version,
        root_sha256=anchor,
        timestamp_version=timestamp_version,
        images=tuple(images),
        registry=registry,
        registry_tag=registry_tag,
        arches=tuple(arches),
    )


def _kind_rank(kind: str) -> int:
    return _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)


def _arch_key(arch: str) -> tuple[int, str]:
    from distbuild.arch import ARCHES

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


@after_release
def _page_after_release(event: ReleaseEvent) -> None:
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
