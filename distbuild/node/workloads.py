"""``distbuild-update workloads``: run provisioning's containers with containerd.

rcS starts it under ``/usr/lib/distbuild/supervise`` when provisioning
listed containers (``/etc/distbuild/workloads.json``, checked again here:
it lives on ``data``). It waits (bounded) until containerd answers, then
for each container, in a thread of its own:

1. pulls the image by digest for this node's own platform
   (``ctr images pull --platform linux/<arch>``; ``--plain-http`` only for a
   registry under ``insecure_registries``), again with backoff until it works
   (the network may come up after the runner);
2. runs it with runc (``ctr run --rm``), each line of its output on the
   console as ``distbuild-os: container NAME: <line>``;
3. applies the restart policy: ``always`` runs it again, ``on-failure`` only
   after a non-zero exit, ``never`` leaves it; waits 1 s, doubling to 30 s,
   after each quick exit.

Every ``ctr`` call but the container's own run has a deadline. Each state
change is kept in ``/run/distbuild/workloads.json`` (this boot's), which
``distbuild-update status`` shows; a runner started again by its supervisor
does not run again what finished by its policy this boot. Once no container
is left to run the runner idles (a supervisor would otherwise start the list
again), unless told ``--until-done``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from distbuild.core import fsutil
from distbuild.core.arch import get_arch
from distbuild.core.errors import CommandError, DistbuildError
from distbuild.core.run import popen, run
from distbuild.node.config import NodePaths, read_release
from distbuild.node.containers import APPLIED, Container, Workloads, from_json
from distbuild.node.state import now_iso

STATE = "/run/distbuild/workloads.json"
PULL_DEADLINE = 900.0  # one pull under emulation on a slow card
CALL_DEADLINE = 30.0  # every other ctr call
READY_DEADLINE = 300.0  # containerd starting on a busy first boot
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL
MAX_LINE = 4096
FINAL = ("exited", "stopped")


class WorkloadError(DistbuildError):
    """The workloads cannot run (no containerd, an unusable list)."""

    exit_code = 3


@dataclass(frozen=True)
class Backoff:
    first: float = 1.0
    most: float = 30.0
    reset_after: float = 60.0  # a run this long counts as healthy


def ctr_version() -> list[str]:
    return ["ctr", "--connect-timeout", "2s", "version"]


def ctr_images() -> list[str]:
    return ["ctr", "images", "ls", "-q"]


def ctr_pull(c: Container, platform: str) -> list[str]:
    plain = ["--plain-http"] if c.plain_http else []
    return ["ctr", "images", "pull", "--platform", platform, *plain, str(c.image)]


def ctr_run(c: Container, platform: str) -> list[str]:
    net = ["--net-host"] if c.network == "host" else []
    return ["ctr", "run", "--rm", "--platform", platform, *net, str(c.image), c.name, *c.args]


def ctr_clear(name: str) -> list[list[str]]:
    """What a power cut or a killed runner may have left of ``name``."""
    return [["ctr", "tasks", "delete", "--force", name], ["ctr", "containers", "delete", name]]


def ctr_kill(name: str, sig: str) -> list[str]:
    return ["ctr", "tasks", "kill", "--signal", sig, name]


def spec_digest(c: Container) -> str:
    doc = Workloads((c,)).to_json()
    return hashlib.sha256(doc + str(c.plain_http).encode()).hexdigest()[:16]


def clean(raw: bytes) -> str:
    """A line of a container's output, safe for the console (no control characters)."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return "".join(ch if ch.isprintable() else "?" for ch in text.replace("\t", " "))


class Console:
    """Where the runner's lines go: stdout (the supervisor's log) and the console device."""

    def __init__(self, console: Path | None, stream: IO[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._stream = stream if stream is not None else sys.stdout
        self._console = console

    def say(self, text: str) -> None:
        line = f"distbuild-os: {text}\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()
            if self._console is not None:
                with suppress(OSError):  # a console that went away must not stop the workloads
                    fd = os.open(self._console, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
                    try:
                        os.write(fd, line.encode())
                    finally:
                        os.close(fd)


class Runner:
    """Runs a :class:`Workloads` list until every container is done or ``stop`` is set."""

    def __init__(
        self,
        paths: NodePaths,
        workloads: Workloads,
        platform: str,
        console: Console,
        stop: threading.Event,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.paths = paths
        self.workloads = workloads
        self.platform = platform
        self.console = console
        self.stop = stop
        self.backoff = backoff
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        previous = read_state(paths).get("containers") or {}
        for c in workloads.containers:
            old = previous.get(c.name)
            if not isinstance(old, dict) or old.get("spec") != spec_digest(c):
                old = {}
            self.states[c.name] = old if old.get("state") in FINAL else {}

    # -- state ------------------------------------------------------------------

    def _set(self, c: Container, state: str, **facts: Any) -> None:
        with self._lock:
            entry = self.states[c.name]
            entry.update(facts, state=state, image=str(c.image), restart=c.restart)
            entry.update(spec=spec_digest(c), since=now_iso())
            doc = {"updated": now_iso(), "platform": self.platform, "containers": self.states}
            with suppress(OSError):  # /run full or gone: the console still says it
                fsutil.write_atomic(
                    self.paths.at(STATE), json.dumps(doc, indent=2, sort_keys=True).encode()
                )

    # -- one container ----------------------------------------------------------

    def serve(self, c: Container) -> None:
        """Pull ``c``, then run it as its restart policy says."""
        if self.states[c.name].get("state") in FINAL:
            self.console.say(f"container {c.name} finished earlier this boot; not run again")
            return
        if not self._pull(c):
            return
        pause, restarts = self.backoff.first, 0
        while not self.stop.is_set():
            started = time.monotonic()
            self._set(c, "running", restarts=restarts)
            rc = self._run_once(c)
            again = c.restart == "always" or (c.restart == "on-failure" and rc != 0)
            if self.stop.is_set() or not again:
                final = "stopped" if self.stop.is_set() else "exited"
                self._set(c, final, exit_code=rc, restarts=restarts)
                self.console.say(f"container {c.name} exited ({rc}); restart={c.restart}: {final}")
                return
            if time.monotonic() - started > self.backoff.reset_after:
                pause = self.backoff.first
            restarts += 1
            self._set(c, "restarting", exit_code=rc, restarts=restarts)
            self.console.say(f"container {c.name} exited ({rc}); restarting in {pause:g}s")
            self.stop.wait(pause)
            pause = min(pause * 2, self.backoff.most)
        self._set(c, "stopped", restarts=restarts)

    def _pull(self, c: Container) -> bool:
        """Pull until it works (True) or the runner stops (False)."""
        if self._present(c):
            self.console.say(f"container {c.name}: {c.image} is here already")
            return True
        pause = self.backoff.first
        while not self.stop.is_set():
            self._set(c, "pulling")
            try:
                run(
                    ctr_pull(c, self.platform),
                    stdout=subprocess.DEVNULL,  # progress tables, many a second
                    timeout=PULL_DEADLINE,
                )
            except DistbuildError as e:
                reason = _reason(e)
                self._set(c, "pull-failed", message=reason)
                self.console.say(
                    f"container {c.name}: cannot pull {c.image}: {reason}; again in {pause:g}s"
                )
                self.stop.wait(pause)
                pause = min(pause * 2, self.backoff.most)
                continue
            self.console.say(f"container {c.name} pulled {c.image} for {self.platform}")
            return True
        self._set(c, "stopped")
        return False

    def _present(self, c: Container) -> bool:
        """An earlier boot pulled ``c``'s image (a digest names the same bytes forever)."""
        try:
            proc = run(ctr_images(), check=False, capture=True, timeout=CALL_DEADLINE)
        except DistbuildError:
            return False
        return (
            proc.returncode == 0 and str(c.image) in proc.stdout.decode("utf-8", "replace").split()
        )

    def _run_once(self, c: Container) -> int:
        """One run of ``c``: its output on the console; its exit code (-1: ctr failed)."""
        for argv in ctr_clear(c.name):
            with suppress(DistbuildError):
                run(argv, check=False, capture=True, timeout=CALL_DEADLINE)
        proc = popen(ctr_run(c, self.platform), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with self._lock:
            self._procs[c.name] = proc
        self.console.say(f"container {c.name} started")
        assert proc.stdout is not None
        try:
            while raw := proc.stdout.readline(MAX_LINE):
                self.console.say(f"container {c.name}: {clean(raw)}")
        finally:
            rc = proc.wait()
            with self._lock:
                self._procs.pop(c.name, None)
        return rc

    # -- the whole list ---------------------------------------------------------

    def halt(self) -> None:
        """Stop every running container: SIGTERM through ctr, SIGKILL after a grace."""
        self.stop.set()
        with self._lock:
            procs = dict(self._procs)
        for proc in procs.values():
            with suppress(OSError):
                proc.send_signal(signal.SIGTERM)  # ctr run forwards it to the task
        deadline = time.monotonic() + STOP_GRACE
        for name, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(DistbuildError):
                    run(ctr_kill(name, "SIGKILL"), check=False, capture=True, timeout=CALL_DEADLINE)
                proc.kill()

    def run(self, until_done: bool) -> None:
        """Serve every container; return when all are done (``until_done``) or on stop."""
        threads = [
            threading.Thread(target=self.serve, args=(c,), name=c.name, daemon=True)
            for c in self.workloads.containers
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and not self.stop.is_set():
            self.stop.wait(0.5)
        if self.stop.is_set():
            self.halt()
        for t in threads:
            t.join(STOP_GRACE + CALL_DEADLINE)
        if not until_done:
            self.console.say("workloads: every container is done; idle")
            self.stop.wait()


def _reason(e: DistbuildError) -> str:
    if isinstance(e, CommandError):
        tail = [line for line in str(e.stderr).strip().splitlines() if line.strip()]
        return clean((tail[-1] if tail else f"exit {e.returncode}").encode())[:300]
    return e.message


def wait_for_containerd(stop: threading.Event, deadline: float = READY_DEADLINE) -> None:
    """Return once ``ctr version`` answers; :class:`WorkloadError` after ``deadline``."""
    end = time.monotonic() + deadline
    while not stop.is_set():
        with suppress(DistbuildError):
            if run(ctr_version(), check=False, capture=True, timeout=20).returncode == 0:
                return
        if time.monotonic() > end:
            break
        stop.wait(1.0)
    if stop.is_set():
        return  # stopped while waiting: the runner stops its containers, none started
    raise WorkloadError(
        f"containerd did not answer 'ctr version' within {deadline:g}s",
        hint="see /var/log/containerd.log",
    )


def load_workloads(paths: NodePaths) -> Workloads | None:
    """What provisioning applied, checked again; None if it listed no containers."""
    path = paths.at(APPLIED)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise WorkloadError(f"cannot read {APPLIED}: {e.strerror}") from None
    return from_json(data, APPLIED)


def read_state(paths: NodePaths) -> dict[str, Any]:
    try:
        doc = json.loads(paths.at(STATE).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def workloads_status(paths: NodePaths) -> dict[str, Any]:
    """What ``distbuild-update status`` shows: each listed container and its state."""
    try:
        listed = load_workloads(paths)
    except DistbuildError as e:
        return {"error": e.message, "containers": {}}
    running = read_state(paths).get("containers") or {}
    out: dict[str, Any] = {}
    for c in listed.containers if listed else ():
        entry = running.get(c.name)
        out[c.name] = entry if isinstance(entry, dict) else {"state": "not started"}
        out[c.name].setdefault("image", str(c.image))
    return {"containers": out}


def workloads_lines(s: dict[str, Any]) -> list[str]:
    lines = [f"workloads:  ERROR: {s['error']}"] if s.get("error") else []
    for name, e in sorted((s.get("containers") or {}).items()):
        facts = [f"restarts {e['restarts']}"] if e.get("restarts") else []
        if "exit_code" in e:
            facts.append(f"exit {e['exit_code']}")
        if e.get("message"):
            facts.append(str(e["message"]))
        extra = f" ({', '.join(facts)})" if facts else ""
        lines.append(f"container:  {name} {e.get('state', '?')}{extra} {e.get('image', '')}")
    return lines


def run_workloads(paths: NodePaths, console: Path | None, until_done: bool, as_json: bool) -> int:
    """``distbuild-update workloads``: the runner, until stopped (SIGTERM) or done."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    out = Console(console, sys.stderr if as_json else None)
    workloads = load_workloads(paths)
    states: dict[str, Any] = {}
    if workloads is None:
        out.say("workloads: provisioning lists no containers")
        if not until_done:
            stop.wait()
    else:
        platform = str(get_arch(read_release(paths.release).arch).platform)
        wait_for_containerd(stop)
        runner = Runner(paths, workloads, platform, out, stop)
        runner.run(until_done)
        states = runner.states
    if as_json:
        print(json.dumps({"containers": states}, indent=2, sort_keys=True))
    return 0
