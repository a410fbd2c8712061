"""Find the node's provisioning input, and apply it once into ``data``.

``distbuild-update provision`` runs from rcS before any service starts.
Sources, first found wins:

1. the boot partition's root: ``distbuild-provision.yaml``, or the NoCloud
   files ``user-data``/``meta-data``/``network-config`` (what a person can
   write onto a freshly flashed card on any laptop);
2. the kernel command line's ``ds=nocloud;s=http://host:port/path/`` (netboot),
   fetched with a deadline by the node's bounded HTTP client;
3. ``/usr/lib/distbuild/provision.yaml``, baked in by ``distbuild image --provision``.

Everything is parsed, checked and rendered into the list of files it makes
before the first byte is written, so a bad input leaves the previous
configuration as it was. The files land in ``/etc`` and ``/var/lib`` (the
overlays on ``data``) one by one, each atomically, through real directories
only (a symlink on the way is refused). The record
(``/var/lib/distbuild/provision/applied.json``: instance-id, sha256 of the
input) is written last: the same input again does nothing, a new
instance-id applies again, and an interrupted apply is redone next boot.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import fsutil
from distbuild.core.errors import DistbuildError
from distbuild.node.config import NodePaths
from distbuild.node.containers import APPLIED as WORKLOADS
from distbuild.node.provision import (
    NOCLOUD_FILES,
    PROVISION_FILE,
    Provision,
    ProvisionError,
    parse,
)
from distbuild.node.state import now_iso

BAKED = "/usr/lib/distbuild/provision.yaml"
STATE = "/var/lib/distbuild/provision"
ROOT_SSH = "/etc/distbuild/ssh/root"  # /root/.ssh links here (the root is read-only)
MAX_FILE = 256 * 1024
FETCH_DEADLINE = 30.0

_NOCLOUD = re.compile(r"(?:^|\s)ds=nocloud(?:-net)?;s=(\S+)")


@dataclass(frozen=True)
class Outcome:
    applied: bool
    message: str


def _read_dir(directory: Path) -> dict[str, bytes]:
    """The provisioning files in ``directory`` (bounded reads, regular files only)."""
    found: dict[str, bytes] = {}
    for name in (PROVISION_FILE, *NOCLOUD_FILES):
        path = directory / name
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ProvisionError(f"{path} is not a regular file")
        if st.st_size > MAX_FILE:
            raise ProvisionError(f"{path} is {st.st_size} bytes, more than {MAX_FILE}")
        with path.open("rb") as f:
            found[name] = f.read(MAX_FILE + 1)
    if PROVISION_FILE in found and len(found) > 1:
        raise ProvisionError(
            f"{directory} has both {PROVISION_FILE} and NoCloud files",
            hint="keep one of the two forms",
        )
    return found


def _fetch(url: str) -> dict[str, bytes]:
    """The NoCloud files under ``url`` (``meta-data`` and ``user-data`` required)."""
    from distbuild.node.http import Http as Client
    from distbuild.node.http import HttpStatusError, Limits, TransferError

    if not url.startswith(("http://", "https://")):
        raise ProvisionError(f"ds=nocloud seed {url[:200]!r} is not an http(s) URL")
    base = url if url.endswith("/") else url + "/"
    client = Client(Limits(read_timeout=10, deadline=FETCH_DEADLINE, tries=1))
    found: dict[str, bytes] = {}
    for name in NOCLOUD_FILES:
        try:
            found[name] = client.get(base + name, MAX_FILE)
        except HttpStatusError as e:
            if name == "network-config" and e.status == 404:
                continue
            raise ProvisionError(f"cannot fetch {base}{name}: {e.message}") from None
        except TransferError as e:
            raise ProvisionError(f"cannot fetch {base}{name}: {e.message}") from None
    return found


def find(paths: NodePaths, boot_dir: Path | None) -> tuple[dict[str, bytes], str] | None:
    """The first provisioning input of the node: (files, where), or None."""
    if boot_dir is not None:
        found = _read_dir(boot_dir)
        if found:
            return found, "boot partition"
    try:
        cmdline = paths.cmdline.read_text()
    except OSError:
        cmdline = ""
    seed = _NOCLOUD.search(cmdline)
    if seed:
        return _fetch(seed.group(1)), seed.group(1)
    baked = paths.at(BAKED)
    if baked.is_file():
        return {PROVISION_FILE: baked.read_bytes()[: MAX_FILE + 1]}, "image"
    return None


def render(p: Provision, paths: NodePaths) -> dict[str, tuple[bytes, int]]:
    """Every file the provisioning makes: node path -> (content, mode)."""
    out: dict[str, tuple[bytes, int]] = {f.path: (f.content, f.mode) for f in p.files}
    if p.hostname:
        out["/etc/hostname"] = (p.hostname.encode() + b"\n", 0o644)
    for user, keys in p.keys.items():
        out[_authorized_keys(user, paths)] = ("".join(k + "\n" for k in keys).encode(), 0o600)
    if p.network is not None:
        net = p.network
        lines = [f"address {net.interface} {a}" for a in net.addresses]
        if net.gateway:
            lines.append(f"gateway {net.interface} {net.gateway}")
        out["/etc/distbuild/network.static"] = ("".join(x + "\n" for x in lines).encode(), 0o644)
        if net.nameservers:
            resolv = "".join(f"nameserver {s}\n" for s in net.nameservers)
            out["/etc/resolv.conf"] = (resolv.encode(), 0o644)
    if p.ntp_servers:
        out["/etc/distbuild/ntp.servers"] = ("\n".join(p.ntp_servers).encode() + b"\n", 0o644)
    if p.workloads is not None:
        out[WORKLOADS] = (p.workloads.to_json(), 0o644)
    return out


def _authorized_keys(user: str, paths: NodePaths) -> str:
    """Where dropbear reads ``user``'s keys: root's through the /root/.ssh link."""
    if user == "root":
        return f"{ROOT_SSH}/authorized_keys"
    try:
        lines = paths.at("/etc/passwd").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 6 and fields[0] == user:
            home = fields[5].rstrip("/")
            if home.startswith(("/etc/", "/var/lib/")) and ".." not in home.split("/"):
                return f"{home}/.ssh/authorized_keys"
            raise ProvisionError(
                f"user {user}'s home {home} is not on the data partition",
                hint="list the keys under root (the node's user)",
            )
    raise ProvisionError(f"user {user!r} does not exist on this node", hint="use root")


def _real_dir(root: Path, rel: str) -> Path:
    """``root/rel`` as a directory made of real directories (created 0755, symlinks refused)."""
    here = root
    for part in rel.strip("/").split("/"):
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            here.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ProvisionError(f"/{here.relative_to(root)} is not a directory (a link?)")
    return here


def _write(paths: NodePaths, files: dict[str, tuple[bytes, int]]) -> None:
    for path, (content, mode) in sorted(files.items()):
        parent, _, name = path.rpartition("/")
        try:
            directory = _real_dir(paths.root, parent)
            if path.endswith("/authorized_keys"):
                os.chmod(directory, 0o700)
            fsutil.write_atomic(directory / name, content, mode=mode)
        except OSError as e:
            raise ProvisionError(
                f"cannot write {path}: {e.strerror}",
                hint="it is applied again on the next boot",
            ) from None


def record_path(paths: NodePaths) -> Path:
    return paths.at(f"{STATE}/applied.json")


def read_record(paths: NodePaths) -> dict[str, Any]:
    try:
        data = json.loads(record_path(paths).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(paths: NodePaths, record: dict[str, Any]) -> None:
    fsutil.write_atomic(
        record_path(paths), json.dumps(record, indent=2, sort_keys=True).encode(), mode=0o644
    )


def apply(paths: NodePaths, files: dict[str, bytes], source: str) -> Outcome:
    """Check ``files`` and apply them unless this instance was applied already."""
    record = read_record(paths)
    try:
        p = parse(files, source)
        previous = record.get("applied") or {}
        if previous.get("instance_id") == p.instance_id:
            same = previous.get("sha256") == p.digest
            record.pop("error", None)
            _save(paths, record)
            return Outcome(
                False,
                f"already applied instance-id={p.instance_id}"
                + ("" if same else " (the input changed: change instance-id to apply it)"),
            )
        rendered = render(p, paths)
        _write(paths, rendered)
        if p.network is None:  # back to DHCP
            paths.at("/etc/distbuild/network.static").unlink(missing_ok=True)
        if p.workloads is None:  # no containers any more
            paths.at(WORKLOADS).unlink(missing_ok=True)
    except DistbuildError as e:
        record_error(paths, e)
        raise
    keys = sum(len(k) for k in p.keys.values())
    count = len(p.workloads.containers) if p.workloads else 0
    record = {
        "applied": {
            "instance_id": p.instance_id,
            "sha256": p.digest,
            "source": source,
            "at": now_iso(),
            "hostname": p.hostname,
            "keys": keys,
            "files": sorted(rendered),
            "network": "static" if p.network else "dhcp",
            "containers": count,
        }
    }
    _save(paths, record)
    return Outcome(
        True,
        f"provisioned hostname={p.hostname or '-'} keys={keys} files={len(p.files)} "
        f"network={'static' if p.network else 'dhcp'} containers={count} "
        f"instance-id={p.instance_id}",
    )


def record_error(paths: NodePaths, e: DistbuildError) -> None:
    """Keep what was applied; note why this input was not."""
    record = read_record(paths)
    record["error"] = {"at": now_iso(), "message": e.message, "hint": e.hint}
    with suppress(OSError):  # /var not writable: the console still says it
        _save(paths, record)


def provision(paths: NodePaths, boot_dir: Path | None = None) -> Outcome:
    """Find the input (the boot partition mounted read-only if no ``boot_dir``) and apply it."""
    try:
        if boot_dir is None:
            with _boot_partition(paths) as mounted:
                found = find(paths, mounted)
        else:
            found = find(paths, boot_dir)
    except DistbuildError as e:
        record_error(paths, e)
        raise
    if found is None:
        return Outcome(False, "no provisioning input (boot partition, ds=nocloud, image)")
    return apply(paths, *found)


@contextmanager
def _boot_partition(paths: NodePaths) -> Iterator[Path | None]:
    """The boot partition (GPT label esp or boot), mounted read-only for the block."""
    from distbuild.core.run import run
    from distbuild.node.system import partition_by_label

    device = partition_by_label(paths, "esp") or partition_by_label(paths, "boot")
    if device is None:
        yield None
        return
    mount = paths.at("/run/distbuild/provision-boot")
    mount.mkdir(parents=True, exist_ok=True)
    proc = run(
        ["mount", "-t", "vfat", "-o", "ro", device, mount], check=False, capture=True, timeout=30
    )
    if proc.returncode != 0:
        raise ProvisionError(f"cannot mount the boot partition {device} to read provisioning")
    try:
        yield mount
    finally:
        run(["umount", mount], check=False, capture=True, timeout=30)


def provision_status(paths: NodePaths) -> dict[str, Any]:
    """What ``distbuild-update status`` shows about provisioning."""
    record = read_record(paths)
    return {"applied": record.get("applied"), "error": record.get("error")}


def provision_lines(s: dict[str, Any]) -> list[str]:
    """The status text lines: what was applied, and the last refused input."""
    lines = []
    if s.get("applied"):
        a = s["applied"]
        lines.append(
            f"provision:  instance-id {a['instance_id']} from {a['source']} at {a['at']} "
            f"(hostname {a['hostname'] or '-'}, {a['keys']} keys, network {a['network']})"
        )
    if s.get("error"):
        e = s["error"]
        lines.append(f"provision:  ERROR at {e['at']}: {e['message']}")
    return lines


def run_provision(paths: NodePaths, source_dir: Path | None, as_json: bool = False) -> int:
    """``distbuild-update provision``: one console line; an error never stops the boot."""
    try:
        outcome = provision(paths, source_dir)
    except DistbuildError as e:
        if as_json:
            print(
                json.dumps({"applied": False, "error": e.message, "hint": e.hint}, sort_keys=True)
            )
            return 3
        print(f"distbuild-os: provision error: {e.message}", flush=True)
        if e.hint:
            print(f"distbuild-os: provision hint: {e.hint}", flush=True)
        print("distbuild-os: provision: the previous configuration stays", flush=True)
        return 3
    if as_json:
        print(json.dumps(dataclasses.asdict(outcome), sort_keys=True))
    else:
        print(f"distbuild-os: {outcome.message}", flush=True)
    return 0
