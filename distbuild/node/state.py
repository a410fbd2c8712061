"""The updater's state on the ``data`` partition, written atomically.

Two files under the state directory (``/var/lib/distbuild-update``):

* ``state.json``: the last check and its result, an installed update waiting
  for (or just back from) its reboot, and the versions rolled back here;
* ``progress.json``: how far the payload of an interrupted install got, so the
  next attempt (after a crash or power cut) resumes with an HTTP Range request.

Both are replaced whole (temp file, fsync, rename, fsync of the directory), so
a power cut leaves the old or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distbuild.core import fsutil
from distbuild.core.errors import DistbuildError

STATE_FILE = "state.json"
PROGRESS_FILE = "progress.json"
FORMAT = 1


def now_iso(epoch: float | None = None) -> str:
    """UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    stamp = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: old or new content survives a power cut."""
    fsutil.write_atomic(path, data, mode=None)


@dataclass
class Result:
    """The outcome of the last check or apply, as ``status`` reports it."""

    at: str
    ok: bool
    action: str  # check | apply | mark-good | rollback | boot
    message: str
    version: str | None = None  # the version it was about, if any


@dataclass
class Pending:
    """An update written to ``slot`` and set to boot next, not yet blessed."""

    slot: str
    version: str
    from_slot: str
    from_version: str
    installed_at: str
    reboot_requested: bool = False  # the reboot policy has acted (or waits for a lock)
    lock_held: bool = False  # a FleetLock reboot lock taken for this update


@dataclass
class RolledBack:
    """A version that was given up here; never installed again automatically."""

    version: str
    slot: str
    at: str
    reason: str


@dataclass
class NodeState:
    last_check: str | None = None
    last_result: Result | None = None
    pending: Pending | None = None
    rolled_back: list[RolledBack] = field(default_factory=list)
    lock_held: bool = False  # a FleetLock lock still to be released after boot
    updated: list[dict[str, str]] = field(default_factory=list)  # recent successful updates
    failures: list[Result] = field(default_factory=list)  # the last few refusals and errors

    def record(self, result: Result, keep: int = 10) -> None:
        """Make ``result`` the last one; a failure is also kept among the last ``keep``."""
        self.last_result = result
        if result.ok:
            return
        kept = self.failures
        if kept and (kept[-1].action, kept[-1].message) == (result.action, result.message):
            kept = kept[:-1]  # the same failure again (a daemon polling): keep it once
        self.failures = [*kept[-(keep - 1) :], result]

    def failed_versions(self) -> set[str]:
        return {r.version for r in self.rolled_back}

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, blob: bytes) -> NodeState:
        raw = json.loads(blob)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError("unknown state format")
        result = raw.get("last_result")
        pending = raw.get("pending")
        return cls(
            last_check=raw.get("last_check"),
            last_result=Result(**result) if result else None,
            pending=Pending(**pending) if pending else None,
            rolled_back=[RolledBack(**r) for r in raw.get("rolled_back", [])],
            lock_held=bool(raw.get("lock_held", False)),
            updated=list(raw.get("updated", [])),
            failures=[Result(**r) for r in raw.get("failures", [])],
        )


@dataclass
class Progress:
    """How much of a payload is durably in a slot (bytes before ``offset`` are fsynced)."""

    target: str
    sha256: str
    length: int
    slot: str
    device: str
    offset: int

    def matches(self, target: str, sha256: str, length: int, slot: str, device: str) -> bool:
        return (self.target, self.sha256, self.length, self.slot, self.device) == (
            target,
            sha256,
            length,
            slot,
            device,
        )


class StateStore:
    """The state directory: ``state.json``, ``progress.json``, TUF metadata, the log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def metadata_dir(self) -> Path:
        return self.directory / "metadata"

    @property
    def log_file(self) -> Path:
        return self.directory / "update.log"

    def load(self) -> NodeState:
        """The saved state; a missing or unreadable file starts afresh (and says so)."""
        path = self.directory / STATE_FILE
        try:
            return NodeState.from_json(path.read_bytes())
        except FileNotFoundError:
            return NodeState()
        except (ValueError, TypeError, KeyError) as e:
            # Never brick the updater over its own bookkeeping: keep the bad
            # file for a person to look at and start over.
            broken = path.with_name(path.name + ".broken")
            os.replace(path, broken)
            state = NodeState()
            state.last_result = Result(
                now_iso(), False, "state", f"unreadable state file moved to {broken}: {e}"
            )
            return state

    def save(self, state: NodeState) -> None:
        try:
            write_atomic(self.directory / STATE_FILE, state.to_json())
        except OSError as e:
            raise DistbuildError(
                f"cannot write the updater state in {self.directory}: {e.strerror}",
                hint="is the data partition mounted and writable?",
            ) from None

    def progress(self) -> Progress | None:
        try:
            raw = json.loads((self.directory / PROGRESS_FILE).read_bytes())
            return Progress(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None

    def save_progress(self, progress: Progress) -> None:
        write_atomic(
            self.directory / PROGRESS_FILE,
            json.dumps(asdict(progress), sort_keys=True).encode(),
        )

    def clear_progress(self) -> None:
        path = self.directory / PROGRESS_FILE
        try:
            path.unlink()
        except FileNotFoundError:
            return
