"""Boot a disk image in qemu-system under TCG and watch its serial console.

The disk is used through qemu's copy-on-write snapshot unless ``write`` is
set, so trying an image never changes it. Guest reboots (a panic with
``panic=N``, a failed try) stay inside one run: firmware variables and disk
writes persist across them, which is what boot counting needs.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from distbuild.disk.bootchain import get_chain
from distbuild.errors import DistbuildError
from distbuild.model.recipe import Recipe
from distbuild.run import popen, which


@dataclass
class BootResult:
    """What a run printed, and when each expected text appeared (seconds from qemu start)."""

    transcript: str = ""
    seen: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    exited: int | None = None  # qemu's exit code if it stopped by itself

    def count(self, text: str) -> int:
        return self.transcript.count(text)


def qemu_argv(recipe: Recipe, disk: Path, state: Path, write: bool) -> list[str]:
    chain = get_chain(recipe.boot_chain)
    binary = which(f"qemu-system-{recipe.arch.qemu_system}", "qemu-system")
    argv = [
        binary,
        "-accel",
        "tcg",  # never KVM: guests hang on it here, and TCG is what CI has
        "-m",
        str(recipe.qemu_memory),
        "-smp",
        "1",
        "-nographic",
        "-no-user-config",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-nic",
        "none",
        *chain.qemu_args(recipe, disk, state),
        *recipe.qemu_extra,
    ]
    if not write:
        argv.append("-snapshot")
    return argv


def boot_disk(
    recipe: Recipe,
    disk: Path,
    *,
    timeout: float,
    expect: Sequence[str] = (),
    write: bool = False,
    echo: TextIO | None = None,
) -> BootResult:
    """Boot ``disk`` until every text in ``expect`` appeared in order (or qemu exits).

    Raises a :class:`DistbuildError` on timeout, or when qemu exits before
    the expected texts appeared.
    """
    if not disk.is_file():
        raise DistbuildError(f"disk image {disk} not found")
    state = Path(tempfile.mkdtemp(prefix="distbuild-boot-"))
    result = BootResult()
    try:
        argv = qemu_argv(recipe, disk.resolve(), state, write)
        start = time.monotonic()
        proc = popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        raw = bytearray()
        pos = 0
        waiting = list(expect)
        try:
            while True:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    break
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                raw += chunk
                if echo is not None:
                    echo.write(chunk.decode(errors="replace"))
                    echo.flush()
                text = raw.decode(errors="replace")
                while waiting and (i := text.find(waiting[0], pos)) >= 0:
                    pos = i + len(waiting[0])
                    result.seen.append((waiting.pop(0), time.monotonic() - start))
                if expect and not waiting:
                    break
        finally:
            result.seconds = time.monotonic() - start
            result.exited = proc.poll()
            if result.exited is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        result.transcript = raw.decode(errors="replace")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    if waiting:
        what = f"waiting for {waiting[0]!r}"
        if result.exited is not None:
            tail = "\n".join(result.transcript.strip().splitlines()[-5:])
            raise DistbuildError(
                f"qemu exited with code {result.exited} {what}\n{tail}",
                hint="see the console output; is the disk image for this arch?",
            )
        raise DistbuildError(
            f"timed out after {timeout:.0f}s {what}",
            hint="see the console output above, or raise --timeout",
        )
    if not expect and result.exited is None:
        raise DistbuildError(
            f"the guest was still running after {timeout:.0f}s",
            hint="pass --expect TEXT to stop when the guest prints it, or raise --timeout",
        )
    return result
