"""Reboot coordination: immediate, kured's sentinel, a FleetLock lock, or never.

FleetLock is Zincati's protocol (as served by airlock and others): before
rebooting the node POSTs ``/v1/pre-reboot`` and reboots only on ``200``; once
the new version is healthy it POSTs ``/v1/steady-state`` to give the slot back.
Both carry ``{"client_params": {"id": <node id>, "group": <group>}}`` and the
header ``fleet-lock-protocol: true``. Any other answer means the lock is not
ours (another node holds it, or the server refuses): the node waits and asks
again later, and does not reboot.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import DistbuildError
from distbuild.node.http import Http, TransferError
from distbuild.node.state import write_atomic

log = logging.getLogger("distbuild.node")


@dataclass(frozen=True)
class LockAnswer:
    """A FleetLock server's answer: granted, or why not."""

    granted: bool
    status: int
    kind: str = ""
    value: str = ""

    def __str__(self) -> str:
        if self.granted:
            return "granted"
        detail = f"{self.kind}: {self.value}" if self.kind else "no reason given"
        return f"HTTP {self.status} ({detail})"


class FleetLock:
    """A FleetLock client for one node in one group (requests under ``http``'s
    read timeout and deadline)."""

    def __init__(self, url: str, node_id: str, group: str, http: Http | None = None) -> None:
        self.url = url.rstrip("/")
        self.node_id = node_id
        self.group = group
        self.http = http or Http()

    def pre_reboot(self) -> LockAnswer:
        """Ask for the reboot lock."""
        return self._post("/v1/pre-reboot")

    def steady_state(self) -> LockAnswer:
        """Give the reboot lock back (idempotent on the server's side)."""
        return self._post("/v1/steady-state")

    def _post(self, path: str) -> LockAnswer:
        body = json.dumps({"client_params": {"id": self.node_id, "group": self.group}}).encode()
        headers = {"fleet-lock-protocol": "true", "Content-Type": "application/json"}
        try:
            status, answer = self.http.post(self.url + path, body, headers)
        except TransferError as e:
            raise TransferError(f"FleetLock: {e.message}", e.hint) from None
        if 200 <= status < 300:
            return LockAnswer(True, status)
        kind, value = _error_body(answer)
        return LockAnswer(False, status, kind, value)


def _error_body(data: bytes) -> tuple[str, str]:
    try:
        raw = json.loads(data)
        return str(raw.get("kind", "")), str(raw.get("value", ""))
    except (ValueError, AttributeError):
        return "", data.decode(errors="replace").strip()[:200]


def write_kured_sentinel(path: Path, version: str) -> None:
    """kured reboots a node (draining it first) when this file exists."""
    try:
        write_atomic(
            path, f"distbuild-update: {version} is installed and needs a reboot\n".encode()
        )
    except OSError as e:
        raise DistbuildError(f"cannot write kured's sentinel {path}: {e.strerror}") from None
