"""A qemu guest booted with its recipe's boot chain (the U-Boot tests), its serial
console read line by line with a deadline."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.bootchain import get_chain
from distbuild.core.run import popen
from distbuild.model.recipe import Recipe


@dataclass
class Console:
    """A qemu guest's serial console, read line by line with a deadline."""

    proc: subprocess.Popen[bytes]
    log: Path
    lines: list[str] = field(default_factory=list)
    _buf: bytes = b""

    def wait_for(self, *texts: str, timeout: float) -> str | None:
        """Read until a line contains one of ``texts``; return that text, or None
        when the guest exits or the deadline passes."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with self.log.open("ab") as log:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        return None
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                log.write(chunk)
                self._buf += chunk
                while b"\n" in self._buf:
                    raw, self._buf = self._buf.split(b"\n", 1)
                    line = raw.decode(errors="replace").rstrip("\r")
                    self.lines.append(line)
                    for text in texts:
                        if text in line:
                            return text
        return None

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_qemu(recipe: Recipe, disk: Path, workdir: Path, extra: Sequence[str] = ()) -> Console:
    """Boot ``disk`` under TCG with the recipe's boot chain, console on a pipe
    (``extra``: more qemu arguments)."""
    chain = get_chain(recipe.boot_chain)
    state = workdir / "qemu-state"
    state.mkdir(exist_ok=True)
    argv = [
        f"qemu-system-{recipe.arch.qemu_system}",
        "-accel",
        "tcg",
        "-m",
        str(recipe.qemu_memory),
        "-nographic",
        "-nic",
        "none",
        *chain.qemu_args(recipe, disk, state),
        *extra,
    ]
    proc = popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return Console(proc, workdir / "console.log")
