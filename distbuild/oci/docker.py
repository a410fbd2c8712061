"""Load a built image into a Docker engine through the docker Python SDK.

Docker 20.10 (Debian 12's docker.io) cannot load OCI layouts, so the chosen
platform's manifest is turned into a docker-archive (``docker save`` format:
``manifest.json`` naming the config and layer blobs) and streamed to the
engine as it is produced: no temp copy, the blobs are read straight from the
build's layout. Docker decompresses gzip layers itself and checks each against
the config's ``diff_ids``, and names the image after the config's digest, so
what lands in the engine is byte for byte what the build recorded.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import ui
from distbuild.core.arch import Platform, arch_for_platform, host_arch, normalize
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.oci.layout import LAYER_GZIP, MANIFEST, Layout, platform_of
from distbuild.record import BuildRecord, load_record

DEFAULT_HOST = "unix:///var/run/docker.sock"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# Layer media types Docker 20.10 unpacks; anything else (zstd, foreign layers)
# is refused here with a clear message instead of failing inside the engine.
LAYER_TYPES = (
    LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
)
CHUNK = 1 << 20
# A load of a large image is sent in seconds but unpacked by the engine before
# it answers; this bounds that wait, not the transfer.
LOAD_TIMEOUT = 900

# The reference grammar of distribution/reference, reduced to what a tag needs.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
_TAG = r"[\w][\w.-]{0,127}"
_REFERENCE = re.compile(rf"^{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*:{_TAG}$")


@dataclass(frozen=True)
class Selected:
    """One platform's image in a build: what will be loaded."""

    platform: Platform
    arch: str | None  # distbuild arch name, when the platform is in the table
    manifest_digest: str
    config: dict[str, Any]  # descriptor
    layers: list[dict[str, Any]]  # descriptors


@dataclass(frozen=True)
class LoadedImage:
    """What the engine now holds."""

    tag: str
    image_id: str  # sha256:<config digest>, Docker's image ID
    platform: str
    size: int  # bytes streamed to the engine
    seconds: float


def build_platforms(record: BuildRecord, layout: Layout) -> list[tuple[Platform, dict[str, Any]]]:
    """The (normalised platform, manifest descriptor) pairs of a build's index."""
    _, index = layout.image_index(record.oci.get("ref"))
    out = []
    for desc in index.get("manifests", []):
        if desc.get("mediaType") not in (MANIFEST, DOCKER_MANIFEST):
            continue
        p = platform_of(desc)
        if not p.os or not p.architecture or p.os == "unknown":
            continue  # attestations and other non-image entries
        out.append((normalize(p), desc))
    return out


def select(directory: Path, platform: str | None) -> tuple[BuildRecord, Layout, Selected]:
    """Find a build's image for ``platform`` (default: the host's)."""
    record, directory = load_record(directory)
    if not record.oci.get("layout"):
        raise DistbuildError(
            f"build {record.image} {record.version} has no OCI image",
            hint="add 'oci' to the image definition's outputs and build again",
        )
    layout = Layout(directory / record.oci["layout"])
    if platform is not None:
        wanted = Platform.parse(platform)
        why = ""
    else:
        host = host_arch()
        if host is None:
            raise UsageError(
                "the host's architecture is not one distbuild builds for",
                hint="choose the image to load with --platform, e.g. --platform linux/arm64",
            )
        wanted = normalize(host.platform)
        why = " (the host's platform)"
    have = build_platforms(record, layout)
    for p, desc in have:
        if p == wanted:
            manifest = layout.read_json(desc["digest"])
            arch = arch_for_platform(p)
            return (
                record,
                layout,
                Selected(
                    platform=p,
                    arch=arch.name if arch else None,
                    manifest_digest=desc["digest"],
                    config=manifest["config"],
                    layers=list(manifest.get("layers", [])),
                ),
            )
    listed = ", ".join(str(p) for p, _ in have) or "none"
    raise UsageError(
        f"build {record.image} {record.version} has no image for {wanted}{why}",
        hint=f"it has: {listed}; pick one with --platform",
    )


def default_tag(record: BuildRecord, selected: Selected) -> str:
    """``distbuild/<image>:<version>``, with ``-<arch>`` unless it is the host's.

    The host's image takes the plain tag so ``docker run distbuild/<image>:<version>``
    runs natively; images of other arches get a suffix so loading all three
    leaves all three side by side instead of each replacing the last.
    """
    version = re.sub(r"[^\w.-]", "_", record.version)
    host = host_arch()
    if host is None or normalize(host.platform) != selected.platform:
        suffix = selected.arch or str(selected.platform).replace("/", "-")
        version += "-" + suffix
    name = re.sub(r"[^a-z0-9._-]", "-", record.image.lower()).strip("._-") or "image"
    return f"distbuild/{name}:{version[:128]}"


def check_tag(tag: str) -> str:
    """Validate a tag the way Docker will, adding ``:latest`` when none is given."""
    last = tag.rsplit("/", 1)[-1]
    if "@" not in tag and ":" not in last:
        tag += ":latest"
    if not _REFERENCE.match(tag):
        raise UsageError(
            f"invalid image tag {tag!r}",
            hint="write it as [registry/]name[:tag] in lower case, e.g. distbuild/toolbox:dev",
        )
    return tag


def _member(name: str, size: int, mtime: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = mtime
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _blob_file(layout: Layout, desc: dict[str, Any]) -> Path:
    path = layout.blob_path(desc["digest"])
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DistbuildError(
            f"{layout.path}: blob {desc['digest']} is missing",
            hint="the build is incomplete; build it again",
        ) from None
    if size != desc["size"]:
        raise DistbuildError(
            f"{layout.path}: blob {desc['digest']} is {size} bytes, the manifest says {desc['size']}",
            hint="the build is damaged; build it again",
        )
    return path


# One member of a docker-archive: its name, content (a blob file or bytes), size, is a directory.
_Member = tuple[str, Path | bytes, int, bool]


def docker_archive(
    layout: Layout, selected: Selected, tags: list[str], mtime: int = 0
) -> tuple[int, Iterator[bytes]]:
    """The (size, chunks) of a docker-archive tar holding one image.

    Everything is checked before the first chunk is produced, so a damaged
    layout is an error here, not a half-sent stream.
    """
    for layer in selected.layers:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise DistbuildError(
                f"layer {layer['digest']} has media type {layer.get('mediaType')!r}, "
                "which Docker cannot load",
                hint="docker load takes tar and tar+gzip layers",
            )
    files = _members(layout, selected, tags)
    total = sum(tarfile.BLOCKSIZE + size + len(_pad(size)) for _, _, size, _ in files)
    total += 2 * tarfile.BLOCKSIZE
    return total, _chunks(files, mtime)


def _members(layout: Layout, selected: Selected, tags: list[str]) -> list[_Member]:
    """The archive's members: the config, each layer once, and manifest.json last."""
    config_path = _blob_file(layout, selected.config)
    layer_paths = [_blob_file(layout, layer) for layer in selected.layers]
    config_name = selected.config["digest"].split(":", 1)[1] + ".json"
    layer_names = [layer["digest"].split(":", 1)[1] for layer in selected.layers]
    manifest = json.dumps(
        [
            {
                "Config": config_name,
                "RepoTags": tags,
                "Layers": [f"{name}/layer.tar" for name in layer_names],
            }
        ],
        separators=(",", ":"),
    ).encode()
    files: list[_Member] = [(config_name, config_path, selected.config["size"], False)]
    seen: set[str] = set()
    for name, path, layer in zip(layer_names, layer_paths, selected.layers, strict=True):
        if name in seen:  # the same layer twice: one copy is enough
            continue
        seen.add(name)
        files.append((name + "/", b"", 0, True))
        files.append((name + "/layer.tar", path, layer["size"], False))
    files.append(("manifest.json", manifest, len(manifest), False))
    return files


def _chunks(files: list[_Member], mtime: int) -> Iterator[bytes]:
    for name, content, size, is_dir in files:
        yield _member(name, size, mtime, is_dir)
        if isinstance(content, bytes):
            yield content
        else:
            sent = 0
            with content.open("rb") as f:
                while chunk := f.read(CHUNK):
                    sent += len(chunk)
                    yield chunk
            if sent != size:
                raise DistbuildError(f"{content} changed while it was being sent")
        yield _pad(size)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def docker_client(docker_host: str | None = None) -> Any:
    """A client of the engine at ``docker_host`` (default: $DOCKER_HOST, then the system socket)."""
    import docker
    import requests

    host = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
    try:
        client = docker.DockerClient(base_url=host, timeout=LOAD_TIMEOUT)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        reason = _os_reason(e)
        hint = (
            "start dockerd (e.g. 'systemctl start docker'), or point --docker-host or "
            "DOCKER_HOST at a running engine"
        )
        if reason == os.strerror(errno.EACCES):
            hint = "run as root or as a member of the 'docker' group"
        raise DistbuildError(f"cannot reach the Docker engine at {host}: {reason}", hint) from None
    return client


def _os_reason(error: BaseException) -> str:
    """The OS error under a client exception ("Connection refused"), or its text."""
    todo: list[object] = [error]
    seen: set[int] = set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        todo.extend([e.__cause__, e.__context__, *e.args])
    return str(error).removeprefix("Error while fetching server API version: ")


def load_selected(
    client: Any, layout: Layout, selected: Selected, tag: str, mtime: int = 0
) -> LoadedImage:
    """Stream one image into the engine and check that it landed under ``tag``."""
    import docker
    import requests

    size, chunks = docker_archive(layout, selected, [tag], mtime)
    start = time.monotonic()
    try:
        client.images.load(chunks)
        image = client.images.get(tag)
    except docker.errors.ImageLoadError as e:
        raise DistbuildError(
            f"Docker refused the image {tag}: {e}",
            hint="check the engine's log; a layer that does not match the config is a damaged build",
        ) from None
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise DistbuildError(
            f"loading {tag} into Docker failed: {e}",
            hint="check that the engine is running and has room for the image",
        ) from None
    seconds = time.monotonic() - start
    image_id = selected.config["digest"]
    if image.id != image_id:
        raise DistbuildError(
            f"Docker holds {tag} as {image.id}, expected {image_id}",
            hint="another load replaced the tag at the same time; load it again",
        )
    return LoadedImage(
        tag=tag, image_id=image_id, platform=str(selected.platform), size=size, seconds=seconds
    )


def load_build(
    directory: Path,
    platform: str | None,
    *,
    tag: str | None = None,
    docker_host: str | None = None,
) -> LoadedImage:
    """Load one platform's image of a build into Docker.

    ``platform`` defaults to the host's; ``tag`` to ``distbuild/<image>:<version>``
    (``-<arch>`` appended for an arch other than the host's).
    """
    record, layout, selected = select(directory, platform)
    name = check_tag(tag) if tag else default_tag(record, selected)
    client = docker_client(docker_host)
    try:
        loaded = load_selected(client, layout, selected, name, mtime=record.source_date_epoch)
    finally:
        client.close()
    ui.note(
        f"loaded {loaded.tag} ({loaded.platform}) into Docker as {loaded.image_id[:19]} "
        f"in {loaded.seconds:.1f} s"
    )
    return loaded
