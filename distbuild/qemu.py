"""Boot a disk image in qemu-system under TCG and watch its serial console.

The disk is used through qemu's copy-on-write snapshot unless ``write`` is
set, so trying an image never changes it. Guest reboots (a panic with
``panic=N``, a failed try) stay inside one run: firmware variables and disk
writes persist across them, which is what boot counting needs.

A board that qemu emulates (:data:`BOARD_MACHINES`) boots as the board does:
no firmware from the host, the SoC's boot ROM reads the SPL from the card
(``-drive if=sd``), and the SoC's own Ethernet takes ``-nic``. qemu's SD
card must be a power of two in size, so the card is the disk image seen
through a qcow2 overlay of that size (with ``write``, the image file itself
is grown, sparse, to it).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from distbuild.bootchain import get_chain
from distbuild.core.errors import DistbuildError
from distbuild.core.run import popen, run, which
from distbuild.model.recipe import Recipe


@dataclass(frozen=True)
class BoardMachine:
    """A qemu machine that emulates a real board: its SoC, fixed memory and CPUs."""

    machine: str
    memory: int  # MiB: the board's RAM, which the machine requires exactly
    cpus: int  # the SoC's cores: the machine refuses fewer
    # Console lines after which the guest has asked for a reset that the machine
    # does not emulate (no watchdog): the runner power-cycles it, as the board's
    # watchdog would reset it. Empty: the machine resets itself.
    halts: tuple[bytes, ...] = ()
    globals: tuple[str, ...] = ()  # -global settings that make the machine match the board


BOARD_MACHINES = {
    # nanopi_neo's U-Boot on qemu's Orange Pi PC (H3): the SPL at 8 KiB on the card.
    # qemu 7.2 emulates no H3 watchdog (8.0 does): Linux's restart and U-Boot's
    # reset both halt; the runner cuts and restores power instead.
    "orangepi-pc-qemu": BoardMachine(
        "orangepi-pc",
        memory=1024,
        cpus=4,
        # Linux's reboot ends in sunxi-wdt's restart loop, its panic in a halt.
        halts=(
            b"reboot: Restarting system",
            b"Reboot failed -- System halted",
            b"resetting ...\r\n",
        ),
        # The H3's timers count its 24 MHz oscillator (CNTFRQ as U-Boot sets
        # it); qemu's default of 62.5 MHz makes the guest's clock run 2.6x fast.
        globals=("cortex-a7-arm-cpu.cntfrq=24000000",),
    ),
}


def board_machine(board: str) -> BoardMachine:
    try:
        return BOARD_MACHINES[board]
    except KeyError:
        raise DistbuildError(
            f"qemu does not emulate the board {board!r}",
            hint="boards that boot in qemu: " + ", ".join(sorted(BOARD_MACHINES)),
        ) from None


def card_size(size: int) -> int:
    """The smallest power of two holding ``size`` bytes: what qemu's SD card takes."""
    return 1 << max(0, size - 1).bit_length()


def sd_card(disk: Path, state: Path, write: bool) -> tuple[Path, str]:
    """The disk as qemu's SD card (a power of two in size): the file and its format.

    Without ``write`` a qcow2 overlay in ``state`` (the image is only read);
    with it, the image file grown in place (sparse: the new end reads as zeros).
    """
    size = disk.stat().st_size
    want = card_size(size)
    if write:
        if size != want:
            with disk.open("r+b") as f:
                f.truncate(want)
        return disk, "raw"
    overlay = state / "card.qcow2"
    qemu_img = which("qemu-img", "qemu-utils")
    run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", disk, overlay, str(want)])
    return overlay, "qcow2"


def board_args(board: str, disk: Path, state: Path, write: bool) -> list[str]:
    """qemu's arguments for a board machine: SoC, memory, cores and the SD card."""
    m = board_machine(board)
    card, fmt = sd_card(disk, state, write)
    return [
        "-M",
        m.machine,
        "-m",
        str(m.memory),
        "-smp",
        str(m.cpus),
        "-drive",
        f"if=sd,format={fmt},file={card}",
        *(arg for g in m.globals for arg in ("-global", g)),
    ]


@dataclass
class BootResult:
    """What a run printed, and when each expected text appeared (seconds from qemu start)."""

    transcript: str = ""
    seen: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    exited: int | None = None  # qemu's exit code if it stopped by itself

    def count(self, text: str) -> int:
        return self.transcript.count(text)


def qemu_argv(
    recipe: Recipe,
    disk: Path,
    state: Path,
    write: bool,
    nic: str | None = None,
    extra: Sequence[str] = (),
    board: str | None = None,
) -> list[str]:
    """qemu's argv; ``board``: boot as that emulated board (:data:`BOARD_MACHINES`)."""
    binary = which(f"qemu-system-{recipe.arch.qemu_system}", "qemu-system")
    if board is None:
        chain = get_chain(recipe.boot_chain)
        machine = ["-m", str(recipe.qemu_memory), "-smp", "1"]
        machine += chain.qemu_args(recipe, disk, state)
    else:
        machine = board_args(board, disk, state, write)
    argv = [
        binary,
        "-accel",
        "tcg",  # never KVM: guests hang on it here, and TCG is what CI has
        "-nographic",
        "-no-user-config",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-nic",
        nic or "none",
        *machine,
        *(recipe.qemu_extra if board is None else ()),
        *extra,
    ]
    if not write and board is None:  # a board's card is a throwaway overlay already
        argv.append("-snapshot")
    return argv


class Guest:
    """One running qemu: its console is read as it comes, text by text.

    ``nic`` is a qemu ``-nic`` spec (default: no network); ``wrap`` is put
    before qemu's argv, e.g. ``ip netns exec NAME`` to give the guest a
    network only inside a namespace. :meth:`power_cut` kills qemu at once,
    which is what pulling the plug does to the guest's disk writes.
    ``extra`` is more qemu arguments (e.g. ``-rtc base=1970-01-01``).
    ``board``: boot as that emulated board (its SoC's NIC takes ``nic``,
    so give it no ``model=``).
    """

    def __init__(
        self,
        recipe: Recipe,
        disk: Path,
        *,
        write: bool = False,
        echo: TextIO | None = None,
        nic: str | None = None,
        wrap: Sequence[str] = (),
        extra: Sequence[str] = (),
        board: str | None = None,
    ) -> None:
        if not disk.is_file():
            raise DistbuildError(f"disk image {disk} not found")
        self.echo = echo
        self.result = BootResult()
        self._raw = bytearray()
        self.pos = 0
        self._state = Path(tempfile.mkdtemp(prefix="distbuild-boot-"))
        argv = qemu_argv(recipe, disk.resolve(), self._state, write, nic, extra, board)
        self._argv = [*wrap, *argv]
        self._halts = () if board is None else board_machine(board).halts
        self._scanned = 0  # console bytes already searched for a halt
        self.power_cycles = 0
        self.start = time.monotonic()
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return popen(
            self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def _power_cycle_if_halted(self) -> None:
        """A board that halted where it asked for a reset gets its power cut and restored."""
        if not any(self._raw.find(h, self._scanned) >= 0 for h in self._halts):
            self._scanned = max(0, len(self._raw) - 64)  # a line may arrive in pieces
            return
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        note = b"\r\ndistbuild-qemu: the board halted instead of resetting; power-cycling it\r\n"
        self._raw += note
        if self.echo is not None:
            self.echo.write(note.decode())
        self._scanned = len(self._raw)
        self.power_cycles += 1
        self.proc = self._spawn()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def transcript(self) -> str:
        return self._raw.decode(errors="replace")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _read(self, wait: float) -> bool:
        """Read what the console has (waiting up to ``wait`` s); False once qemu is gone."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, wait))
        if not ready:
            return True
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        self._raw += chunk
        if self.echo is not None:
            self.echo.write(chunk.decode(errors="replace"))
            self.echo.flush()
        if self._halts:
            self._power_cycle_if_halted()
        return True

    def expect(self, text: str, timeout: float) -> float:
        """Wait until ``text`` appears after the last expected text; its time from start."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.transcript.find(text, self.pos)
            if i >= 0:
                self.pos = i + len(text)
                at = self.elapsed()
                self.result.seen.append((text, at))
                return at
            left = deadline - time.monotonic()
            if left <= 0:
                raise DistbuildError(
                    f"timed out after {timeout:.0f}s waiting for {text!r}",
                    hint="see the console output above, or raise --timeout",
                )
            if not self._read(min(left, 1.0)):
                self.proc.wait()
                tail = "\n".join(self.transcript.strip().splitlines()[-5:])
                raise DistbuildError(
                    f"qemu exited with code {self.proc.returncode} waiting for {text!r}\n{tail}",
                    hint="see the console output; is the disk image for this arch?",
                )

    def watch(self, until: Callable[[], bool], timeout: float, what: str) -> float:
        """Keep reading the console until ``until()`` holds; seconds from start."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise DistbuildError(f"timed out after {timeout:.0f}s waiting for {what}")
            if not self._read(min(left, 0.2)):
                raise DistbuildError(f"qemu exited waiting for {what}")
        return self.elapsed()

    def run_out(self, timeout: float) -> bool:
        """Read until qemu exits by itself (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._read(min(left, 1.0)):
                return True
        return False

    def power_cut(self) -> None:
        """Kill qemu now: no shutdown, no flush of the guest's caches."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._finish()

    def stop(self) -> None:
        """Stop qemu (terminate, then kill) and clean up."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._finish()

    def _finish(self) -> None:
        self.proc.wait()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            while self._read(0):
                pass
            self.proc.stdout.close()
        self.result.transcript = self.transcript
        self.result.seconds = self.elapsed()
        shutil.rmtree(self._state, ignore_errors=True)


def boot_disk(
    recipe: Recipe,
    disk: Path,
    *,
    timeout: float,
    expect: Sequence[str] = (),
    write: bool = False,
    echo: TextIO | None = None,
    extra: Sequence[str] = (),
    board: str | None = None,
) -> BootResult:
    """Boot ``disk`` until every text in ``expect`` appeared in order (or qemu exits).

    ``board``: boot it as that emulated board (:data:`BOARD_MACHINES`).

    Raises a :class:`DistbuildError` on timeout, or when qemu exits before
    the expected texts appeared.
    """
    guest = Guest(recipe, disk, write=write, echo=echo, extra=extra, board=board)
    exited = None
    try:
        deadline = time.monotonic() + timeout
        for text in expect:
            guest.expect(text, max(0.0, deadline - time.monotonic()))
        if not expect:
            if not guest.run_out(timeout):
                raise DistbuildError(
                    f"the guest was still running after {timeout:.0f}s",
                    hint="pass --expect TEXT to stop when the guest prints it, or raise --timeout",
                )
            exited = guest.proc.returncode
    finally:
        guest.stop()
    guest.result.exited = exited
    return guest.result
