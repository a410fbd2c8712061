"""A long-lived worker in a private mount namespace, for property tests.

``tests/support/sandbox.run_sandboxed`` makes one namespace per call; a
property test runs hundreds of examples, so ``Sandbox`` makes the namespace
once (every mount read-only except the writable directories, /proc, /sys and
/dev; a tmpfs on each trap directory) and forks one short-lived job process
per example inside it. The pytest process keeps running hypothesis: it writes
each example's files (the definitions, build records) into directories the
namespace sees read-only, sends the job, and gets back the job's exit code,
its output, whether it ran into its deadline and a snapshot of every trap.

Jobs are module-level functions (pickled by name) returning an exit code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.sandbox import _setup, snapshot, wait_child

INTERNAL = 70


@dataclass(frozen=True)
class JobResult:
    returncode: int
    output: str
    timed_out: bool
    traps: dict[Path, dict[str, Any]]


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("!Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _recv(fd: int) -> Any:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    (size,) = struct.unpack("!Q", exactly(8))
    return pickle.loads(exactly(size))


def _run_job(fn: Callable[..., int], args: tuple[Any, ...], log: Path) -> None:
    """In the job process: run ``fn`` with stdout and stderr in ``log``; never return."""
    code = INTERNAL
    try:
        os.setpgid(0, 0)  # its own group: a deadline kills what it started too
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives until _exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = fn(*args)
    except BaseException:
        traceback.print_exc()
        print("job: uncaught exception (exit 70)")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(requests: int, replies: int, traps: Sequence[Path], log: Path) -> None:
    while True:
        try:
            fn, args, timeout = _recv(requests)
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:
            os.close(requests)
            os.close(replies)
            _run_job(fn, args, log)
        code, timed_out = wait_child(pid, timeout)
        # A job that forked and left children behind: they die with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        output = log.read_text(errors="replace") if log.exists() else ""
        snaps = {t: snapshot(t) for t in traps}
        for t in traps:  # empty again, so one escape does not taint the next examples
            _empty(t)
        _send(replies, JobResult(code, output, timed_out, snaps))


def _empty(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


class Sandbox:
    """One namespaced process serving jobs until ``close``."""

    def __init__(
        self,
        writable: Sequence[Path],
        traps: Sequence[Path],
        env: Mapping[str, str],
        log: Path,
    ) -> None:
        self.traps = list(traps)
        self._made = [t for t in self.traps if not t.exists()]
        for t in self._made:
            t.mkdir(parents=True)
        req_r, self._req = os.pipe()
        self._rep, rep_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 125
            try:
                os.setsid()
                os.close(self._req)
                os.close(self._rep)
                _setup({t: {} for t in self.traps}, writable)
                os.environ.update(env)
                tempfile.tempdir = None  # pytest's process cached /tmp before TMPDIR was set
                _serve(req_r, rep_w, self.traps, log)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        self.pid = pid

    def run(self, fn: Callable[..., int], *args: Any, timeout: float = 20.0) -> JobResult:
        """Run ``fn(*args)`` in a fresh process inside the namespace."""
        _send(self._req, (fn, args, timeout))
        try:
            result: JobResult = _recv(self._rep)
        except EOFError:
            raise RuntimeError("the sandbox process died") from None
        return result

    def close(self) -> None:
        os.close(self._req)
        os.close(self._rep)
        wait_child(self.pid, 10)
        for t in self._made:
            with contextlib.suppress(OSError):
                t.rmdir()


def check_outcome(result: JobResult, what: str) -> None:
    """Success or a clear ``error:``/``hint:``; never a bug, a hang or a write outside."""
    out = result.output
    assert not result.timed_out, f"{what}: still running at its deadline (a hang)\n{out}"
    for trap, snap in result.traps.items():
        assert not snap, f"{what}: wrote into the trap {trap}: {sorted(snap)}\n{out}"
    assert "Read-only file system" not in out and "EROFS" not in out, (
        f"{what}: tried to write outside the output and cache directories\n{out}"
    )
    assert result.returncode != INTERNAL, f"{what}: internal error (exit 70)\n{out}"
    assert result.returncode >= 0, f"{what}: killed by signal {-result.returncode}\n{out}"
    assert "Traceback" not in out, f"{what}: traceback\n{out}"
    if result.returncode != 0:
        assert "error: " in out and "hint: " in out, (
            f"{what}: exit {result.returncode} without error:/hint:\n{out}"
        )
