"""The ``containers:`` a node runs at boot, checked as hostile input.

Provisioning's workloads section (in ``distbuild-provision.yaml`` or
user-data)::

    containers:
      - name: hello                     # the project's name grammar, a containerd id
        image: REGISTRY[:PORT]/REPO@sha256:<64 hex>   # by digest, never a tag
        args: [uname, -m]               # optional: the command (default: the image's)
        restart: always                 # always | on-failure | never (default always)
        network: none                   # none | host (default none: a namespace with lo only)
    insecure_registries: [REGISTRY:PORT]   # these hosts are spoken to over plain HTTP

The same checks run on the build host (``distbuild image --provision``,
``distbuild disk provision``), when the node applies provisioning, and when
the workloads runner reads what was applied (``/etc/distbuild/workloads.json``
is on ``data``, so it is checked again rather than trusted).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from distbuild.core import names
from distbuild.core.errors import DistbuildError

APPLIED = "/etc/distbuild/workloads.json"  # what provisioning wrote, read by the runner
RESTART = ("always", "on-failure", "never")
NETWORK = ("none", "host")
MAX_CONTAINERS = 32
MAX_ARGS = 128
MAX_ARG = 4096
MAX_REGISTRIES = 16
CONTAINER_KEYS = ("name", "image", "args", "restart", "network")

# containerd's identifier rule (identifiers.Validate), stricter than the name grammar.
_CONTAINERD_ID = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", re.ASCII)
_CONTAINERD_ID_MAX = 76
# The distribution reference grammar: a repository path, then @algorithm:hex.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
DIGEST_HINT = (
    "name the image by its index digest, REGISTRY[:PORT]/REPOSITORY@sha256:<64 hex> "
    "('distbuild push' prints it): a tag can change under a node, a digest cannot"
)


class ContainerSpecError(DistbuildError):
    """A ``containers:`` entry is unusable; the node runs none of the list."""

    exit_code = 3


@dataclass(frozen=True)
class Image:
    """An image reference pinned by digest: ``registry/repository@digest``."""

    registry: str  # host[:port]
    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Container:
    name: str
    image: Image
    args: tuple[str, ...] = ()
    restart: str = "always"
    network: str = "none"
    plain_http: bool = False  # its registry is listed under insecure_registries


@dataclass(frozen=True)
class Workloads:
    containers: tuple[Container, ...]
    insecure_registries: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The applied form (``/etc/distbuild/workloads.json``), read back by :func:`check`."""
        doc = {
            "containers": [
                {
                    "name": c.name,
                    "image": str(c.image),
                    "args": list(c.args),
                    "restart": c.restart,
                    "network": c.network,
                }
                for c in self.containers
            ],
            "insecure_registries": list(self.insecure_registries),
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _fail(where: str, message: str, hint: str | None = None) -> ContainerSpecError:
    return ContainerSpecError(f"{where}: {message}", hint=hint)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_registry(value: object, where: str) -> str:
    """``host[:port]``: a DNS name, ``localhost`` or an IPv4 address, and a port."""
    if not isinstance(value, str) or not value or len(value) > 260:
        raise _fail(where, f"{_short(value)} is not a registry host", hint="HOST or HOST:PORT")
    host, sep, port = value.partition(":")
    port_ok = not sep or (_PORT.fullmatch(port) is not None and 0 < int(port) < 65536)
    try:
        ipaddress.IPv4Address(host)
        host_ok = True
    except ValueError:
        host_ok = len(host) <= 253 and all(_LABEL.fullmatch(p) for p in host.split("."))
    if not (host_ok and port_ok):
        raise _fail(where, f"{_short(value)} is not a registry host", hint="HOST or HOST:PORT")
    return value.lower()


def check_image(value: object, where: str) -> Image:
    """A reference that names its registry and pins the image by digest."""
    if not isinstance(value, str) or not value or len(value) > 512:
        raise _fail(where, f"image {_short(value)} is not an image reference", hint=DIGEST_HINT)
    name, at, digest = value.partition("@")
    registry, slash, repository = name.partition("/")
    last = repository.rsplit("/", 1)[-1]
    if not at or ":" in last:
        raise _fail(where, f"image {_short(value)} is named by a tag", hint=DIGEST_HINT)
    if not _DIGEST.fullmatch(digest):
        raise _fail(
            where,
            f"image {_short(value)}: {_short(digest)} is not a sha256 digest",
            hint=DIGEST_HINT,
        )
    if not slash or not ("." in registry or ":" in registry or registry == "localhost"):
        raise _fail(
            where,
            f"image {_short(value)} does not name its registry",
            hint="write the registry's host first: REGISTRY[:PORT]/REPOSITORY@sha256:…",
        )
    registry = check_registry(registry, where)
    if len(repository) > 255 or not all(
        _PATH_COMPONENT.fullmatch(p) for p in repository.split("/")
    ):
        raise _fail(
            where,
            f"image {_short(value)}: {_short(repository)} is not a repository name",
            hint="lowercase letters, digits and . _ - separated by /",
        )
    return Image(registry, repository, digest)


def check_name(value: object, where: str) -> str:
    """The project's name grammar, and an id containerd accepts."""
    name = names.check_name(value, "container name", error=ContainerSpecError, where=where)
    if len(name) > _CONTAINERD_ID_MAX or not _CONTAINERD_ID.fullmatch(name):
        raise _fail(
            where,
            f"container name {name!r} is not a containerd id",
            hint=f"at most {_CONTAINERD_ID_MAX} letters and digits, single . _ - between them",
        )
    return name


def _args(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ARGS:
        raise _fail(where, f"must be a list of at most {MAX_ARGS} strings")
    out = []
    for arg in value:
        if isinstance(arg, bool) or not isinstance(arg, str | int):
            raise _fail(where, f"{_short(arg)} is not a string", hint="quote it")
        text = str(arg)
        if len(text) > MAX_ARG or "\0" in text:
            raise _fail(where, f"an argument is longer than {MAX_ARG} characters or holds a NUL")
        out.append(text)
    return tuple(out)


def _choice(data: Mapping[str, object], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = data.get(key, allowed[0])
    if value not in allowed:
        raise _fail(
            f"{where}.{key}",
            f"{_short(value)} is not one of {', '.join(allowed)}",
            hint=f"{key}: {' | '.join(allowed)}",
        )
    return str(value)


def _container(value: object, insecure: tuple[str, ...], where: str) -> Container:
    if not isinstance(value, dict):
        raise _fail(where, "must be a mapping (name, image, args, restart, network)")
    for key in value:
        if key not in CONTAINER_KEYS:
            raise _fail(
                where, f"unknown key {_short(key)}", hint=f"known keys: {', '.join(CONTAINER_KEYS)}"
            )
    if "image" not in value or "name" not in value:
        raise _fail(where, "name and image are required")
    image = check_image(value["image"], f"{where}.image")
    return Container(
        name=check_name(value["name"], f"{where}.name"),
        image=image,
        args=_args(value.get("args"), f"{where}.args"),
        restart=_choice(value, "restart", RESTART, where),
        network=_choice(value, "network", NETWORK, where),
        plain_http=image.registry in insecure,
    )


def check(containers: object, insecure_registries: object, where: str) -> Workloads | None:
    """The ``containers:`` list and ``insecure_registries:``, or None if there are none."""
    listed = [] if insecure_registries is None else insecure_registries
    if not isinstance(listed, list) or len(listed) > MAX_REGISTRIES:
        raise _fail(
            f"{where}.insecure_registries", f"must be a list of at most {MAX_REGISTRIES} hosts"
        )
    insecure = tuple(
        check_registry(r, f"{where}.insecure_registries[{n}]") for n, r in enumerate(listed)
    )
    if containers is None:
        return None
    if not isinstance(containers, list) or len(containers) > MAX_CONTAINERS:
        raise _fail(f"{where}.containers", f"must be a list of at most {MAX_CONTAINERS} containers")
    found = tuple(
        _container(c, insecure, f"{where}.containers[{n}]") for n, c in enumerate(containers)
    )
    seen: set[str] = set()
    for c in found:
        if c.name in seen:
            raise _fail(f"{where}.containers", f"two containers are named {c.name!r}")
        seen.add(c.name)
    return Workloads(found, insecure) if found else None


def from_json(data: bytes, where: str) -> Workloads | None:
    """The applied file, checked again (it lives on ``data``)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ContainerSpecError(f"{where}: not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) - {"containers", "insecure_registries"}:
        raise ContainerSpecError(f"{where}: not a workloads file")
    return check(doc.get("containers"), doc.get("insecure_registries"), where)
