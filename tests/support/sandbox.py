"""Run code in a private mount namespace, with tmpfs traps and a read-only host.

Host-escape tests need to see a write that lands outside a root without ever
touching the real host. ``run_sandboxed`` forks a child, moves it into a new
mount namespace (``unshare(CLONE_NEWNS)``, propagation private), mounts a
fresh tmpfs over each *trap* directory (seeded with files the test chooses),
optionally remounts every mount read-only except the given writable
directories, then runs a Python callable or execs an argv. When the target
is done, the child snapshots each trap so the test can assert it is exactly
as seeded; the traps vanish with the namespace.

Needs root (the tests that use it are marked ``root``). Linux only.

    out = run_sandboxed(fn, writable=[tmp_path], traps={Path("/tmp/trap"): {"f": b"x"}})
    assert out.traps[Path("/tmp/trap")] == {"f": b"x"}
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

_OPTION_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}
# Kernel interfaces, not host files; /dev stays writable for /dev/null and /dev/shm.
_LEFT_WRITABLE = ("/proc", "/sys", "/dev")
# What a trap snapshot maps each relative path to: file bytes, ("link", target), ("dir",)
# or ("other", mode).
Snapshot = dict[str, Any]
SETUP_FAILED = 125
TIMED_OUT = -signal.SIGKILL


@dataclass
class Outcome:
    """How the sandboxed target ended."""

    returncode: int
    stdout: str
    stderr: str
    value: Any = None  # the callable's return value (callables only)
    error: BaseException | None = None  # the exception the callable raised, if any
    traps: dict[Path, Snapshot] = field(default_factory=dict)
    timed_out: bool = False


def _libc_mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _libc_unshare(flags: int) -> None:
    # os.unshare arrived in Python 3.12; the project supports 3.11.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _mounts() -> list[tuple[str, int]]:
    """Mount points of this namespace and the per-mount flags a remount must keep."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        flags = 0
        for opt in fields[5].split(","):
            flags |= _OPTION_FLAGS.get(opt, 0)
        out.append((point, flags))
    return out


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _make_readonly(writable: Sequence[Path]) -> None:
    keep = [str(Path(w).resolve()) for w in writable]
    for point, flags in _mounts():
        if _under(point, _LEFT_WRITABLE) or _under(point, keep):
            continue
        try:
            _libc_mount("none", point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except FileNotFoundError:
            continue  # shadowed by a later mount on a parent
    for w in keep:
        _libc_mount(w, w, None, MS_BIND | MS_REC)
        _libc_mount("none", w, None, MS_REMOUNT | MS_BIND)


def _seed(trap: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        dest = trap / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def snapshot(directory: Path) -> Snapshot:
    """Everything under ``directory``: relative path → bytes, link target or kind."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(directory))
            st = path.lstat()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir",)
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = ("other", st.st_mode)
    return out


def _setup(traps: Mapping[Path, Mapping[str, bytes]], writable: Sequence[Path] | None) -> None:
    _libc_unshare(CLONE_NEWNS)
    _libc_mount("none", "/", None, MS_REC | MS_PRIVATE)
    if writable is not None:
        _make_readonly([*writable])
    for trap, files in traps.items():
        _libc_mount("tmpfs", str(trap), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        _seed(trap, files)


def _run_target(target: Callable[[], Any] | Sequence[str], result_fd: int) -> int:
    """Run the target in this (namespaced) process; return its exit code."""
    if callable(target):
        try:
            payload: tuple[str, Any] = ("ok", target())
            code = 0
        except BaseException as e:
            traceback.print_exc()
            payload, code = ("raised", e), 1
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            data = pickle.dumps(payload)
        except Exception:
            data = pickle.dumps((payload[0], repr(payload[1])))
        os.write(result_fd, data)
        return code
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(target[0], list(target))
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _child(
    target: Callable[[], Any] | Sequence[str],
    traps: Mapping[Path, Mapping[str, bytes]],
    writable: Sequence[Path] | None,
    out_fd: int,
    err_fd: int,
    result_path: str,
    cwd: Path | None,
    env: Mapping[str, str] | None,
) -> None:
    code = SETUP_FAILED
    try:
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives until _exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        # Opened before the remount: a read-only mount still lets it report.
        result_fd = os.open(result_path, os.O_WRONLY)
        _setup(traps, writable)
        if cwd is not None:
            os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        code = _run_target(target, result_fd)
        snaps = {trap: snapshot(trap) for trap in traps}
        os.write(result_fd, b"\0TRAPS\0" + pickle.dumps(snaps))
        os.close(result_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait_child(pid: int, timeout: float) -> tuple[int, bool]:
    """Reap ``pid`` within ``timeout`` s; past it kill its process group. (exit code, timed out)"""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            # The child's own session: only what it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return TIMED_OUT, True
        time.sleep(0.01)


def run_sandboxed(
    target: Callable[[], Any] | Sequence[str],
    *,
    traps: Mapping[Path, Mapping[str, bytes]] | Sequence[Path] = (),
    writable: Sequence[Path] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``target`` (a callable or an argv) in a private mount namespace.

    ``traps``: directories on which a fresh tmpfs is mounted (a mapping gives
    files to seed, relative path → bytes); each is created on the host if
    missing (and removed again if it was and is still empty). ``writable``:
    when given, every mount except these directories, /proc, /sys and /dev is
    read-only for the target. A target still running after ``timeout``
    seconds is killed (with its process group) and ``timed_out`` is set.
    """
    seeds = {Path(t): {} for t in traps} if not isinstance(traps, Mapping) else dict(traps)
    made = [t for t in seeds if not t.exists()]
    for t in made:
        t.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="sandbox-") as tmp:
        paths = [os.path.join(tmp, n) for n in ("stdout", "stderr", "result")]
        for p in paths:
            Path(p).touch()
        out_fd, err_fd = (os.open(p, os.O_WRONLY) for p in paths[:2])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(target, seeds, writable, out_fd, err_fd, paths[2], cwd, env)
        os.close(out_fd)
        os.close(err_fd)
        code, timed_out = wait_child(pid, timeout)
        stdout, stderr, result = (Path(p).read_bytes() for p in paths)
    for t in made:
        with contextlib.suppress(OSError):
            t.rmdir()
    outcome = Outcome(code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
    outcome.timed_out = timed_out
    payload, _, snaps = result.partition(b"\0TRAPS\0")
    if payload:
        kind, value = pickle.loads(payload)
        if kind == "ok":
            outcome.value = value
        else:
            outcome.error = value if isinstance(value, BaseException) else RuntimeError(value)
    if snaps:
        outcome.traps = pickle.loads(snaps)
    return outcome


def trap_untouched(outcome: Outcome, seeds: Mapping[Path, Mapping[str, bytes]]) -> None:
    """Assert every trap ended exactly as seeded (nothing written, replaced or made)."""
    assert outcome.traps, f"the sandbox did not report its traps:\n{outcome.stderr}"
    for trap, files in seeds.items():
        assert outcome.traps[trap] == _expected(files), f"{trap} was written: {outcome.traps[trap]}"


def _expected(files: Mapping[str, bytes]) -> Snapshot:
    out: Snapshot = {}
    for rel, data in files.items():
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            out[str(Path(*parts[:i]))] = ("dir",)
        out[rel] = data
    return out
