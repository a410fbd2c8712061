"""First-boot provisioning: what the owner says this node is, checked as hostile input.

The ecosystem's own format, a subset of cloud-init's NoCloud datasource:

* ``meta-data``: ``instance-id``, ``local-hostname``;
* ``user-data`` (``#cloud-config``): ``hostname``, ``users`` (``name`` +
  ``ssh_authorized_keys``; ``default`` means root), a top-level
  ``ssh_authorized_keys`` (root's), ``write_files`` (``path``, ``content``,
  ``encoding``, ``permissions``, ``owner``), ``ntp`` (``servers``, ``pools``),
  ``containers`` and ``insecure_registries`` (the workloads, checked by
  :mod:`distbuild.node.containers`);
* ``network-config``: version 2 with one ethernet (``addresses``,
  ``gateway4`` or a default route, ``nameservers``).

Or one ``distbuild-provision.yaml`` holding the user-data keys plus
``instance-id``, ``local-hostname`` and ``network`` (the network-config
document). Every key not listed is refused by name (``runcmd``,
``bootcmd`` and ``packages`` with why), so a typo never passes silently.
This module parses and checks; :mod:`distbuild.node.provision_apply` writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from distbuild.core.errors import DistbuildError
from distbuild.node import containers
from distbuild.node.blockyaml import load

PROVISION_FILE = "distbuild-provision.yaml"
NOCLOUD_FILES = ("meta-data", "user-data", "network-config")
WRITE_ROOTS = ("/etc/", "/var/lib/")
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
# Paths provisioning writes itself (or the node's own state): write_files may not.
RESERVED = (
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/distbuild/network.static",
    "/etc/distbuild/ntp.servers",
    containers.APPLIED,
    "/etc/distbuild/ssh",
    "/var/lib/distbuild/provision",
)
REFUSED = {
    "runcmd": "a node runs no provisioning scripts",
    "bootcmd": "a node runs no provisioning scripts",
    "packages": "a node's software comes from its image, not from a package manager",
    "package_update": "a node's software comes from its image, not from a package manager",
}
MAX_FILES = 64
MAX_KEYS = 64

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_COMPONENT = re.compile(r"[A-Za-z0-9_@+][A-Za-z0-9._@+-]{0,127}")
_IFACE = re.compile(r"[a-z][a-z0-9]{0,14}")


class ProvisionError(DistbuildError):
    """A provisioning file is unusable; the node keeps its previous configuration."""

    exit_code = 3


@dataclass(frozen=True)
class WriteFile:
    path: str  # absolute on the node, normalised, under WRITE_ROOTS
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Network:
    interface: str
    addresses: tuple[str, ...]  # CIDR
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provision:
    instance_id: str
    digest: str  # sha256 of the input files, as read
    source: str
    hostname: str | None = None
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # user -> keys
    files: tuple[WriteFile, ...] = ()
    network: Network | None = None
    ntp_servers: tuple[str, ...] = ()
    workloads: containers.Workloads | None = None


def _fail(where: str, message: str, hint: str | None = None) -> ProvisionError:
    return ProvisionError(f"{where}: {message}", hint=hint)


def _mapping(value: object, where: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, not {_kind(value)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _fail(where, f"must be a list, not {_kind(value)}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"must be a string, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _known(data: Mapping[str, object], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key in REFUSED:
            raise _fail(
                where,
                f"{key} is not supported: {REFUSED[key]}",
                hint="put files in place with write_files; services belong in the image",
            )
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}", hint=f"known keys: {', '.join(allowed)}")


def check_hostname(value: object, where: str) -> str:
    name = _text(value, where)
    if len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise _fail(where, f"{name!r} is not a valid host name", hint="letters, digits, - and .")
    return name


def check_key(value: object, where: str) -> str:
    """One OpenSSH public key line of a type dropbear uses: ``TYPE BASE64 [comment]``."""
    line = _text(value, where).strip()
    if len(line) > 16384 or "\n" in line or "\r" in line:
        raise _fail(where, "an SSH key must be one line")
    kind, _, rest = line.partition(" ")
    blob_text, _, comment = rest.strip().partition(" ")
    if kind not in KEY_TYPES:
        raise _fail(
            where,
            f"SSH key type {kind[:40]!r} cannot be used (or key options were given)",
            hint=f"use one of {', '.join(KEY_TYPES)}, without options",
        )
    try:
        blob = base64.b64decode(blob_text, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise _fail(where, f"the {kind} key is not valid base64 key data") from None
    if inner != kind or len(blob) < 4 + length + 16:
        raise _fail(where, f"the key data is not a {kind} key")
    if not comment.isprintable():
        raise _fail(where, "the key's comment has control characters")
    return f"{kind} {blob_text}" + (f" {comment.strip()}" if comment.strip() else "")


def check_path(value: object, where: str) -> str:
    """An absolute, normalised path under /etc or /var/lib, not one provisioning owns."""
    path = _text(value, where)
    parts = path.split("/")
    if (
        not path.startswith(WRITE_ROOTS)
        or len(path) > 1024
        or not all(_COMPONENT.fullmatch(p) for p in parts[1:])
        or any(p in (".", "..") for p in parts)
    ):
        raise _fail(
            where,
            f"path {path[:200]!r} is not allowed",
            hint="write_files paths are absolute, under /etc or /var/lib, without . or .. "
            "(letters, digits, . _ - @ +)",
        )
    for reserved in RESERVED:
        if path == reserved or path.startswith(reserved + "/"):
            raise _fail(where, f"{path} is written by provisioning itself")
    return path


def _write_file(value: object, where: str) -> WriteFile:
    data = _mapping(value, where)
    _known(data, ("path", "content", "encoding", "permissions", "owner"), where)
    path = check_path(data.get("path"), f"{where}.path")
    text = _text(data.get("content", ""), f"{where}.content")
    encoding = _text(data.get("encoding", "text/plain"), f"{where}.encoding")
    if encoding in ("b64", "base64"):
        try:
            content = base64.b64decode(text, validate=False)
        except binascii.Error:
            raise _fail(where, "content is not valid base64") from None
    elif encoding == "text/plain":
        content = text.encode()
    else:
        raise _fail(where, f"encoding {encoding!r} is not supported", hint="text/plain or b64")
    perms = data.get("permissions", "0644")
    if not isinstance(perms, str) or not re.fullmatch(r"0?[0-7]{3}", perms):
        raise _fail(
            where,
            f"permissions {perms!r} must be a quoted octal string",
            hint="e.g. permissions: '0644' (unquoted 0644 means different numbers to YAML 1.1 and 1.2)",
        )
    owner = data.get("owner", "root:root")
    if owner not in ("root", "root:root"):
        raise _fail(where, f"owner {owner!r}: files are owned by root", hint="drop owner")
    return WriteFile(path, content, int(perms, 8))


def _users(data: Mapping[str, object], where: str) -> dict[str, tuple[str, ...]]:
    keys: dict[str, list[str]] = {}
    top = data.get("ssh_authorized_keys")
    if top is not None:
        keys["root"] = [check_key(k, f"{where}.ssh_authorized_keys") for k in _list(top, where)]
    for n, entry in enumerate(_list(data.get("users", []), f"{where}.users")):
        at = f"{where}.users[{n}]"
        if entry == "default":
            continue
        user = _mapping(entry, at)
        _known(user, ("name", "ssh_authorized_keys"), at)
        name = _text(user.get("name"), f"{at}.name")
        if not _USER.fullmatch(name):
            raise _fail(at, f"{name[:40]!r} is not a valid user name")
        listed = _list(user.get("ssh_authorized_keys", []), f"{at}.ssh_authorized_keys")
        keys.setdefault(name, []).extend(check_key(k, f"{at}.ssh_authorized_keys") for k in listed)
    if sum(len(v) for v in keys.values()) > MAX_KEYS:
        raise _fail(where, f"more than {MAX_KEYS} SSH keys")
    return {name: tuple(found) for name, found in keys.items()}


def _host(value: object, where: str) -> str:
    text = _text(value, where)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return check_hostname(text, where)


def _ntp(value: object, where: str) -> tuple[str, ...]:
    data = _mapping(value, where)
    _known(data, ("servers", "pools", "enabled"), where)
    found = [
        _host(s, f"{where}.{k}")
        for k in ("servers", "pools")
        for s in _list(data.get(k, []), where)
    ]
    return tuple(found) if data.get("enabled", True) is not False else ()


def network_config(value: object, where: str) -> Network | None:
    """The network-config v2 subset: one ethernet with static addresses (or DHCP)."""
    data = _mapping(value, where)
    if "network" in data and len(data) == 1:  # the file may wrap it in network:
        data = _mapping(data["network"], f"{where}.network")
    _known(data, ("version", "ethernets"), where)
    if data.get("version") != 2:
        raise _fail(where, "only network-config version 2 is supported", hint="version: 2")
    ethernets = _mapping(data.get("ethernets"), f"{where}.ethernets")
    if len(ethernets) != 1:
        raise _fail(where, "exactly one ethernet is supported", hint="e.g. ethernets: {eth0: …}")
    ((iface, conf),) = ethernets.items()
    at = f"{where}.ethernets.{iface}"
    if not _IFACE.fullmatch(iface):
        raise _fail(at, f"{iface[:40]!r} is not an interface name", hint="e.g. eth0")
    eth = _mapping(conf, at)
    _known(eth, ("dhcp4", "dhcp6", "addresses", "gateway4", "routes", "nameservers"), at)
    if eth.get("dhcp4") is True or not eth.get("addresses"):
        return None
    addresses = tuple(_cidr(a, f"{at}.addresses") for a in _list(eth["addresses"], at))
    gateway = _gateway(eth, at)
    servers = _mapping(eth.get("nameservers"), f"{at}.nameservers")
    _known(servers, ("addresses", "search"), f"{at}.nameservers")
    dns = tuple(_ip(s, f"{at}.nameservers") for s in _list(servers.get("addresses", []), at))
    return Network(iface, addresses, gateway, dns)


def _ip(value: object, where: str) -> str:
    try:
        return str(ipaddress.ip_address(_text(value, where)))
    except ValueError:
        raise _fail(where, f"{value!r} is not an IP address") from None


def _cidr(value: object, where: str) -> str:
    text = _text(value, where)
    try:
        if "/" not in text:
            raise ValueError(text)
        return str(ipaddress.ip_interface(text))
    except ValueError:
        raise _fail(
            where, f"{text!r} is not an address with a prefix (e.g. 192.0.2.10/24)"
        ) from None


def _gateway(eth: Mapping[str, object], at: str) -> str | None:
    if "gateway4" in eth:
        return _ip(eth["gateway4"], f"{at}.gateway4")
    for n, route in enumerate(_list(eth.get("routes", []), f"{at}.routes")):
        r = _mapping(route, f"{at}.routes[{n}]")
        _known(r, ("to", "via"), f"{at}.routes[{n}]")
        if r.get("to") in ("default", "0.0.0.0/0"):
            return _ip(r.get("via"), f"{at}.routes[{n}].via")
        raise _fail(at, "only a default route is supported", hint="routes: [{to: default, via: …}]")
    return None


USER_DATA_KEYS = (
    "hostname",
    "users",
    "ssh_authorized_keys",
    "write_files",
    "ntp",
    "containers",
    "insecure_registries",
)
META_DATA_KEYS = ("instance-id", "local-hostname")


def parse(files: Mapping[str, bytes], source: str) -> Provision:
    """Check a provisioning input: ``{PROVISION_FILE: …}`` or the NoCloud files."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode() + files[name])
    if PROVISION_FILE in files:
        where = f"{source}/{PROVISION_FILE}"
        data = _mapping(load(files[PROVISION_FILE], where), where)
        _known(data, (*META_DATA_KEYS, *USER_DATA_KEYS, "network"), where)
        meta, user, net = data, data, data.get("network")
    else:
        user_where, meta_where = f"{source}/user-data", f"{source}/meta-data"
        raw_user = files.get("user-data", b"")
        if raw_user.strip() and not raw_user.startswith(b"#cloud-config"):
            raise _fail(user_where, "is not #cloud-config", hint="start it with #cloud-config")
        user = _mapping(load(raw_user, user_where), user_where)
        _known(user, USER_DATA_KEYS, user_where)
        meta = _mapping(load(files.get("meta-data", b""), meta_where), meta_where)
        _known(meta, META_DATA_KEYS, meta_where)
        net = (
            load(files["network-config"], f"{source}/network-config")
            if ("network-config" in files)
            else None
        )
        where = source
    return _build(meta, user, net, where, source, digest.hexdigest())


def _build(
    meta: Mapping[str, object],
    user: Mapping[str, object],
    net: object,
    where: str,
    source: str,
    digest: str,
) -> Provision:
    instance = meta.get("instance-id")
    instance_id = _text(instance, f"{where}.instance-id") if instance else f"sha256:{digest[:16]}"
    if len(instance_id) > 128 or not instance_id.isprintable():
        raise _fail(where, "instance-id must be printable and at most 128 characters")
    name = user.get("hostname") or meta.get("local-hostname")
    files = _list(user.get("write_files", []), f"{where}.write_files")
    if len(files) > MAX_FILES:
        raise _fail(where, f"more than {MAX_FILES} write_files")
    written = tuple(_write_file(f, f"{where}.write_files[{n}]") for n, f in enumerate(files))
    return Provision(
        instance_id=instance_id,
        digest=digest,
        source=source,
        hostname=check_hostname(name, f"{where}.hostname") if name else None,
        keys=_users(user, where),
        files=written,
        network=network_config(net, f"{where}.network") if net is not None else None,
        ntp_servers=_ntp(user["ntp"], f"{where}.ntp") if "ntp" in user else (),
        workloads=containers.check(user.get("containers"), user.get("insecure_registries"), where),
    )


def parse_file(name: str, data: bytes) -> Provision:
    """One file given on the build host's command line: a provisioning file or user-data."""
    if data.startswith(b"#cloud-config"):
        return parse({"user-data": data}, name)
    return parse({PROVISION_FILE: data}, name.rsplit("/", 1)[0] if "/" in name else ".")
