"""Helpers for the node updater tests: root releases, a node tree, a boot simulator.

* :func:`make_root_build` writes a build directory as ``distbuild image`` does
  for the ``root`` output (root image, kernel, initramfs, boot.json), which the
  project's own ``publish`` turns into a real TUF channel. With ``verity`` the
  root image gets a real dm-verity tree (the build's own ``add_verity``, i.e.
  ``veritysetup format``) and boot.json its parameters, as a real build has.
* :class:`Node` is a node's file system under a temporary root: release file,
  config, trust anchor, kernel command line, a U-Boot boot partition (the
  real :mod:`distbuild.core.bootctl.uboot` backend on a directory) and two files
  standing in for the root-a/root-b block devices.
* :meth:`Node.boot` does what the U-Boot boot script does on a reset (walk
  ``BOOT_ORDER``, take the first slot with tries left, count the try) and then
  what the booted root shows: ``distbuild.slot=`` and its release file.
* :class:`FaultServer` serves a channel directory like ``distbuild serve`` but
  can cut a body short, trickle it, or stall, for one path pattern.
* :class:`LockServer` is a FleetLock server (Zincati's protocol, one reboot
  slot per group, as airlock does) that records every call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from distbuild.channel.keys import KeyStore
from distbuild.channel.publish import publish
from distbuild.channel.repo import ChannelRepo, Update
from distbuild.channel.serve import RepoHandler, Traffic
from distbuild.core.bootctl.base import DirFiles, SlotBoot, open_bootctl
from distbuild.core.bootctl.uboot import (
    ORDER_VAR,
    TRIES_VAR,
    UBootControl,
    good_var,
    initial_state,
    left_var,
)
from distbuild.node.config import NodePaths, load_config
from distbuild.node.updater import NodeUpdater
from tests.support.channel import EXPIRY, channel, make_keys

SLOT_SIZE = 8 << 20


def payload(version: str, arch: str, size: int) -> bytes:
    """Deterministic, incompressible-looking bytes for a root image."""
    out = bytearray()
    seed = f"{version}/{arch}".encode()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def make_root_build(
    out: Path,
    version: str,
    arch: str = "armv7",
    image: str = "node",
    size: int = 1 << 20,
    boot_version: str | None = None,
    verity: bool = False,
) -> Path:
    """A build directory with the ``root`` output of one arch; returns its directory."""
    directory = out / image / version
    root_img = payload(version, arch, size)
    boot: dict[str, Any] = {
        "version": boot_version or version,
        "cmdline": f"console=ttyAMA0 distbuild.version={version} "
        f"distbuild.verity={'0' * 64} rootwait panic=5",
        "fs": "erofs",
    }
    if verity:
        root_img, boot["verity"] = with_verity(out / f"{image}-{version}-{arch}.img", root_img)
        v = boot["verity"]
        boot["cmdline"] = (
            f"console=ttyAMA0 distbuild.version={version} distbuild.verity={v['roothash']} "
            f"distbuild.verity_salt={v['salt']} distbuild.verity_blocks={v['data_blocks']} "
            "rootwait panic=5"
        )
    # The layout and kinds of the build's root output (distbuild/disk/outputs.py).
    files = {
        "root.img": ("root", root_img),
        "linux": ("kernel", f"kernel {version} {arch}\n".encode() * 64),
        "initrd": ("initrd", f"initrd {version} {arch}\n".encode() * 64),
        "boot.json": ("boot", json.dumps(boot).encode()),
    }
    artifacts = []
    for name, (kind, data) in files.items():
        path = directory / arch / "root" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        artifacts.append(
            {
                "arch": arch,
                "kind": kind,
                "path": str(path.relative_to(directory)),
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )
    record = {"image": image, "version": version, "source_date_epoch": 0, "artifacts": artifacts}
    (directory / "build.json").write_text(json.dumps(record, indent=2))
    return directory


def with_verity(scratch: Path, data: bytes) -> tuple[bytes, dict[str, Any]]:
    """``data`` (whole 4 KiB blocks) with its dm-verity tree appended, and boot.json's
    ``verity`` object, made as a build makes them (``add_verity``: veritysetup)."""
    from distbuild.disk.rootimg import add_verity

    assert len(data) % 4096 == 0, "a root image is whole 4 KiB blocks"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_bytes(data)
    try:
        v = add_verity(scratch)
        image = scratch.read_bytes()
    finally:
        scratch.unlink()
    meta = {"roothash": v.roothash, "salt": v.salt, "data_blocks": v.data_blocks}
    return image, {**meta, "hash_offset": v.hash_offset}


@dataclass
class Channel:
    """A channel directory with its keys; ``publish`` adds a root release."""

    repo: Path
    keys: KeyStore
    builds: Path
    name: str = "stable"

    def publish(self, version: str, now: datetime | None = None, **kw: Any) -> Path:
        build = make_root_build(self.builds, version, **kw)
        publish(self.repo, channel(self.name), build, self.keys, now=now)
        return build

    @property
    def root_json(self) -> bytes:
        return (self.repo / self.name / "metadata" / "1.root.json").read_bytes()

    def target_file(self, path: str) -> Path:
        """The file on the server holding target ``path`` (``<dir>/<sha256>.<name>``)."""
        directory, _, name = path.rpartition("/")
        hits = sorted((self.repo / self.name / "targets" / directory).glob(f"*.{name}"))
        assert len(hits) == 1, hits
        return hits[0]


def relabel(chan: Channel, path: str, **custom: str) -> None:
    """Re-sign target ``path`` with changed custom metadata (a broken or hostile publish)."""
    repo = ChannelRepo(chan.repo, chan.name)
    with repo.lock(), Update(repo, chan.keys, EXPIRY) as update:
        info = update.get(path)
        assert info is not None
        info.unrecognized_fields["custom"] = {**info.custom, **custom}
        update.add(info, chan.target_file(path))
        update.touch("targets")
        update.commit()


def make_channel(tmp: Path, name: str = "stable") -> Channel:
    return Channel(tmp / "repo", make_keys(tmp / "keys"), tmp / "builds", name)


@dataclass
class Node:
    """A node's file system under ``root`` (see the module docstring)."""

    root: Path
    arch: str = "armv7"
    image: str = "node"
    chain: str = "u-boot"
    config: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None  # EPOCH= (SOURCE_DATE_EPOCH) in the release file

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.root)

    @property
    def boot_dir(self) -> Path:
        return self.root / "boot"

    def device(self, slot: str) -> Path:
        return self.root / "dev" / f"slot-{slot}"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/distbuild-update"

    @property
    def reboot_marker(self) -> Path:
        return self.root / "rebooted"

    def setup(
        self,
        channel_url: str,
        root_json: bytes,
        version: str = "v1",
        slot_size: int = SLOT_SIZE,
        **config: Any,
    ) -> None:
        """A node running ``version`` from slot A (good); slot B empty."""
        (self.root / "usr/share/distbuild").mkdir(parents=True)
        (self.root / "usr/share/distbuild/root.json").write_bytes(root_json)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        for slot in ("a", "b"):
            dev = self.device(slot)
            dev.parent.mkdir(parents=True, exist_ok=True)
            with dev.open("wb") as f:
                f.truncate(slot_size)
        self.boot_dir.mkdir(parents=True)
        bc = self.bootctl()
        if isinstance(bc, UBootControl):
            bc._write(initial_state(3))  # what the disk build's loader_files writes
        bc.install("a", SlotBoot(version, b"kernel v1", b"initrd v1", "console=ttyAMA0"))
        bc.set_next("a", 3)
        bc.mark_good("a")
        self.config = {
            "channel_url": channel_url,
            "channel": "stable",
            "boot_dir": "/boot",
            "boot_chain": self.chain,
            "slot_a": "/dev/slot-a",
            "slot_b": "/dev/slot-b",
            "reboot": "immediate",
            "reboot_command": ["touch", str(self.reboot_marker)],
            "retry_wait": 0.05,
            "retry_wait_max": 0.2,
            "read_timeout": 5,
            **config,
        }
        self.write_config()
        self._show("a", version)

    def write_config(self) -> None:
        lines = [f"{k}: {json.dumps(v)}" for k, v in self.config.items()]
        path = self.root / "etc/distbuild/update.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# written by the test\n" + "\n".join(lines) + "\n")

    def bootctl(self) -> Any:
        """The real backend of the node's boot chain on its boot partition directory."""
        return open_bootctl(self.chain, DirFiles(self.boot_dir), self.cmdline())

    def show(self, slot: str, version: str) -> None:
        """What a root that came up from ``slot`` shows (for chains without a simulator)."""
        self._show(slot, version)

    def cmdline(self) -> str:
        try:
            return (self.root / "proc/cmdline").read_text()
        except FileNotFoundError:
            return ""

    def _show(self, slot: str, version: str) -> None:
        (self.root / "proc").mkdir(exist_ok=True)
        (self.root / "proc/cmdline").write_text(f"console=ttyAMA0 distbuild.slot={slot} panic=5\n")
        (self.root / "etc/distbuild").mkdir(parents=True, exist_ok=True)
        epoch = "" if self.epoch is None else f"EPOCH={self.epoch}\n"
        (self.root / "etc/distbuild/release").write_text(
            f"ARCH={self.arch}\n{epoch}IMAGE={self.image}\nVERSION={version}\n"
        )

    def boot(self) -> tuple[str, str]:
        """A reset: what the U-Boot script picks (counting the try), then that root runs."""
        bc = self.bootctl()
        state = bc.counters()
        slot = None
        for _ in range(2):
            for word in state[ORDER_VAR].split():
                s = word.lower()
                if int(state[left_var(s)]) > 0:
                    state[left_var(s)] = str(int(state[left_var(s)]) - 1)
                    slot = s
                    break
            if slot is not None:
                break
            good = [s for s in ("a", "b") if state[good_var(s)] == "1"] or ["a", "b"]
            for s in good:
                state[left_var(s)] = state[TRIES_VAR]
        assert slot is not None, "no slot would boot"
        bc._write(state)
        version = bc.entry(slot)["distbuild_version"]
        self.reboot_marker.unlink(missing_ok=True)
        self._show(slot, version)
        return slot, version

    def updater(self) -> NodeUpdater:
        return NodeUpdater(load_config(self.paths.config), self.paths)

    def status(self) -> dict[str, Any]:
        return self.updater().status()

    def log(self) -> str:
        path = self.state_dir / "update.log"
        return path.read_text() if path.exists() else ""

    def cut_apply(self, at: int, timeout: float = 30) -> int:
        """Run ``distbuild-update apply`` and SIGKILL it (a power cut) once the
        recorded progress reaches ``at`` bytes; returns the recorded offset."""
        cli = [sys.executable, "-m", "distbuild.node.cli", "--root", str(self.root), "apply"]
        proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        progress = self.state_dir / "progress.json"
        deadline = time.monotonic() + timeout
        offset = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                offset = json.loads(progress.read_text())["offset"]
            except (FileNotFoundError, ValueError):
                offset = 0
            if offset >= at:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the power cut
        proc.wait()
        return offset

    def untouched(self, slot: str) -> bool:
        """Whether a slot device still holds only zeros (nothing was written)."""
        with self.device(slot).open("rb") as f:
            while chunk := f.read(1 << 20):
                if chunk.count(0) != len(chunk):
                    return False
        return True


# --- a server that misbehaves on purpose ------------------------------------------


@dataclass
class Misbehave:
    """For requests whose path matches ``path``: ``cut`` the body after that many
    bytes (first ``times`` requests), send at ``rate`` bytes/s, or ``stall`` after
    ``cut`` bytes for that many seconds."""

    path: str = r"root\.img$"
    cut: int | None = None
    times: int = 1
    rate: float | None = None
    stall: float | None = None
    hits: int = 0
    streamed: int = 0  # body bytes written so far for matching requests (live)


class _FaultHandler(RepoHandler):
    fault: Misbehave | None = None

    def handle(self) -> None:
        # The client going away (a power cut, a refusal) is not the server's error.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        fault = self.fault
        if fault is None or not re.search(fault.path, self.path):
            super().copyfile(source, outputfile)
            return
        fault.hits += 1
        limit = self._remaining
        self._remaining = None
        sent = 0
        block = 16 * 1024 if not fault.rate else max(256, min(16 * 1024, int(fault.rate / 20)))
        started = time.monotonic()
        while limit is None or sent < limit:
            size = block if limit is None else min(block, limit - sent)
            chunk = source.read(size)
            if not chunk:
                break
            if (
                fault.cut is not None
                and fault.hits <= fault.times
                and sent + len(chunk) > fault.cut
            ):
                chunk = chunk[: fault.cut - sent]
                outputfile.write(chunk)
                if fault.stall:
                    time.sleep(fault.stall)
                self.close_connection = True
                return
            outputfile.write(chunk)
            sent += len(chunk)
            fault.streamed += len(chunk)
            if fault.rate:
                ahead = sent / fault.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)


@dataclass
class FaultServer:
    url: str
    traffic: Traffic
    fault: Misbehave | None

    def sent(self, pattern: str = r"root\.img$") -> int:
        """Bytes sent (headers included) for requests whose path matches ``pattern``."""
        return sum(t.sent for t in self.traffic.requests if re.search(pattern, t.path))


@contextmanager
def fault_server(
    directory: Path, fault: Misbehave | None = None, port: int = 0
) -> Iterator[FaultServer]:
    traffic = Traffic()
    handler = type("Handler", (_FaultHandler,), {"traffic": traffic, "fault": fault})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(directory)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield FaultServer(f"http://{host!s}:{port}", traffic, fault)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --- a FleetLock server --------------------------------------------------------------


@dataclass
class Call:
    path: str
    client: dict[str, str]
    rebooted: bool  # whether the node had already rebooted when it asked


@dataclass
class LockServer:
    """A FleetLock server with one reboot slot per group (what airlock does)."""

    marker: Path | None = None  # exists once the node rebooted (host tests)
    holder: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    url: str = ""

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        if headers.get("fleet-lock-protocol") != "true":
            return 400, {"kind": "missing_header", "value": "fleet-lock-protocol"}
        client = json.loads(body)["client_params"]
        rebooted = self.marker is not None and self.marker.exists()
        self.calls.append(Call(path, client, rebooted))
        group, ident = client["group"], client["id"]
        if path == "/v1/pre-reboot":
            if self.holder.get(group, ident) != ident:
                return 409, {"kind": "failed_lock", "value": f"held by {self.holder[group]}"}
            self.holder[group] = ident
            return 200, {}
        if path == "/v1/steady-state":
            if self.holder.get(group) == ident:
                del self.holder[group]
            return 200, {}
        return 404, {"kind": "not_found", "value": path}


@contextmanager
def fleetlock_server(marker: Path | None = None, port: int = 0) -> Iterator[LockServer]:
    server = LockServer(marker)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = server.handle(self.path, headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
