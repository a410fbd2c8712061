"""A private Docker engine for tests, and qemu-user binfmt for foreign-arch containers.

``Dockerd`` starts its own containerd and dockerd as root, with every path (socket,
data root, exec root, pid files, config) in one temporary directory, so it neither
touches nor depends on a system Docker or containerd. It never pulls: its proxy
points at a closed port on 127.0.0.1, so a pull fails at once instead of leaving
the machine; tests only load images. Containers run with ``network_mode="none"``
(the engine has no bridge and leaves iptables alone).

Debian's docker.io (20.10) runs containers with runc; crun fails on this host's
hybrid cgroup hierarchy, so the runtime is named explicitly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core.arch import ARCHES, host_arch
from distbuild.core.run import popen, run, which

# Any request dockerd would send out goes here and is refused (discard port).
NO_NETWORK_PROXY = "http://127.0.0.1:9"

CONTAINERD_CONFIG = """\
version = 2
root = "{root}/containerd/root"
state = "{root}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{root}/containerd.sock"

[debug]
  level = "info"
"""


class DockerdError(RuntimeError):
    pass


class Dockerd:
    """One containerd + dockerd pair under ``root``; ``start()``, then ``stop()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.log = root / "dockerd.log"
        self.containerd_log = root / "containerd.log"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._client: Any = None

    def start(self, timeout: float = 60) -> None:
        for tool, package in (
            ("dockerd", "docker.io"),
            ("containerd", "containerd"),
            ("runc", "runc"),
        ):
            which(tool, package)
        # A unix socket path is limited to 108 bytes; containerd's ttrpc socket is the longest.
        if len(str(self.root / "containerd.sock.ttrpc")) > 100:
            raise DockerdError(f"{self.root} is too long a path for unix sockets")
        (self.root / "containerd.toml").write_text(CONTAINERD_CONFIG.format(root=self.root))
        (self.root / "daemon.json").write_text("{}\n")
        env = {
            "HTTP_PROXY": NO_NETWORK_PROXY,
            "HTTPS_PROXY": NO_NETWORK_PROXY,
            "NO_PROXY": "",
            "http_proxy": NO_NETWORK_PROXY,
            "https_proxy": NO_NETWORK_PROXY,
            "no_proxy": "",
        }
        with self.containerd_log.open("wb") as log:
            self._procs.append(
                popen(
                    ["containerd", "--config", self.root / "containerd.toml"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            )
        self._wait_for(self.root / "containerd.sock", timeout, self.containerd_log)
        with self.log.open("wb") as log:
            self._procs.append(
                popen(
                    [
                        "dockerd",
                        "--config-file",
                        self.root / "daemon.json",
                        "--containerd",
                        self.root / "containerd.sock",
                        "--data-root",
                        self.root / "data",
                        "--exec-root",
                        self.root / "exec",
                        "--pidfile",
                        self.root / "dockerd.pid",
                        "--host",
                        self.host,
                        "--iptables=false",
                        "--ip-masq=false",
                        "--ip-forward=false",
                        "--bridge=none",
                        "--userland-proxy=false",
                        "--storage-driver=overlay2",
                        "--default-runtime=runc",
                        "--log-level=info",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            )
        self._wait_for(self.socket, timeout, self.log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self.client()
                client.ping()
                break
            except Exception as e:
                self._check_alive()
                if time.monotonic() > deadline:
                    log = self._tail(self.log)
                    raise DockerdError(f"dockerd did not answer: {e}\n{log}") from None
                time.sleep(0.2)
        info = client.info()
        if info.get("DefaultRuntime") != "runc":
            raise DockerdError(f"dockerd's default runtime is {info.get('DefaultRuntime')}")

    def client(self) -> Any:
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=300)
        return self._client

    def stop(self) -> None:
        """Remove every container, stop the daemons, unmount and delete what they left."""
        if self._client is not None:
            try:
                for c in self._client.containers.list(all=True):
                    c.remove(force=True)
            except Exception:
                pass  # the daemon is gone already; the mounts are cleaned below
            self._client.close()
            self._client = None
        for proc in reversed(self._procs):  # dockerd first, then its containerd
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        for mount in mounts_under(self.root):
            run(["umount", "--lazy", mount], check=False)

    def _check_alive(self) -> None:
        for proc, log in zip(self._procs, (self.containerd_log, self.log), strict=False):
            if proc.poll() is not None:
                raise DockerdError(
                    f"{proc.args!r} exited with {proc.returncode}:\n{self._tail(log)}"
                )

    def _wait_for(self, path: Path, timeout: float, log: Path) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise DockerdError(f"{path} did not appear in {timeout} s:\n{self._tail(log)}")
            time.sleep(0.1)

    @staticmethod
    def _tail(log: Path, lines: int = 30) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first."""
    prefix = str(root.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # octal escapes, e.g. \040
        if point.startswith(prefix):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def start_dockerd() -> Dockerd:
    """A running private engine in a fresh short temp dir (unix socket paths are short)."""
    root = Path(tempfile.mkdtemp(prefix="dbd-"))
    engine = Dockerd(root)
    try:
        engine.start()
    except BaseException:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return engine


def stop_dockerd(engine: Dockerd) -> None:
    engine.stop()
    shutil.rmtree(engine.root, ignore_errors=True)


# --- qemu-user binfmt -------------------------------------------------------------

BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d")


@dataclass(frozen=True)
class BinfmtEntry:
    name: str  # e.g. qemu-arm
    line: str  # the register line, F flag ensured
    interpreter: Path


def binfmt_entry(name: str) -> BinfmtEntry:
    """The register line for ``name`` from qemu-user-static's binfmt.d file, with ``F``.

    ``F`` (fix binary) makes the kernel open the interpreter now, so it works
    inside containers whose root filesystem has no qemu.
    """
    conf = BINFMT_CONF / f"{name}.conf"
    try:
        text = conf.read_text()
    except FileNotFoundError:
        raise DockerdError(f"{conf} is missing: apt-get install qemu-user-static") from None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        # :name:type:offset:magic:mask:interpreter:flags
        fields = line.split(line[0])
        if len(fields) != 8 or fields[1] != name:
            raise DockerdError(f"{conf}: unexpected binfmt line {line!r}")
        if "F" not in fields[7]:
            fields[7] += "F"
        interpreter = Path(fields[6])
        if not interpreter.exists():
            raise DockerdError(f"{interpreter} is missing: apt-get install qemu-user-static")
        return BinfmtEntry(name, line[0].join(fields), interpreter)
    raise DockerdError(f"{conf} holds no binfmt line")


def foreign_qemu_names() -> list[str]:
    """The qemu-user binfmt names for every arch in the table that is not the host's."""
    host = host_arch()
    return [f"qemu-{a.qemu_user}" for a in ARCHES.values() if a != host]


def register_qemu_binfmt(names: list[str]) -> list[str]:
    """Register each missing entry; return the names this call registered.

    Entries that are already there (registered by someone else) are left as
    they are, but must be enabled and fix-binary, or containers cannot use them.
    """
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
    status = (BINFMT / "status").read_text().strip()
    if status != "enabled":
        raise DockerdError(f"binfmt_misc is {status}: echo 1 > {BINFMT}/status")
    added = []
    for name in names:
        entry = binfmt_entry(name)
        current = BINFMT / name
        if not current.exists():
            fd = os.open(BINFMT / "register", os.O_WRONLY)
            try:
                os.write(fd, entry.line.encode())  # the kernel wants it in one write
            except OSError as e:
                if not current.exists():  # lost a race with another registrar: fine
                    raise DockerdError(f"registering {name} failed: {e}") from None
            else:
                added.append(name)
            finally:
                os.close(fd)
        text = current.read_text()
        flags = next(
            (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), ""
        )
        if not text.startswith("enabled") or "F" not in flags:
            raise DockerdError(
                f"{current} is registered by someone else without the F flag or disabled "
                f"({text.splitlines()[:3]}); containers cannot use it"
            )
    return added


def unregister_binfmt(names: list[str]) -> None:
    for name in names:
        path = BINFMT / name
        if path.exists():
            path.write_text("-1")
