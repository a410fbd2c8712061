"""U-Boot boot control: RAUC's A/B variables in a CRC-checked environment file.

The state lives in a small U-Boot environment file on the FAT boot partition,
in the exact format of ``env export -c`` / ``env import -c`` (and of
``mkenvimage`` / ``fw_printenv``): a little-endian CRC32 of the data, then
``name=value`` strings separated by NUL, ended by a double NUL and padded with
NUL to :data:`ENV_SIZE` bytes. The boot script (see
``distbuild.bootchain.uboot``) reads it, picks the first slot of
``BOOT_ORDER`` whose ``BOOT_<X>_LEFT`` is above zero, decrements that counter
and writes the file back before it boots, exactly as RAUC's U-Boot
integration does.

Two copies are kept, :data:`ENV_FILE` and :data:`ENV_BACKUP`, always written
in that order. A power cut while one is written leaves the other intact, and
the reader takes the first copy whose CRC holds: the primary if valid (it is
never older than the backup), else the backup.

This module is imported by the node updater: standard library only.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping

from distbuild.core.bootctl.base import (
    SLOTS,
    BootControl,
    SlotBoot,
    SlotState,
    check_slot,
    register,
)
from distbuild.core.errors import DistbuildError

ENV_SIZE = 0x1000
"""Bytes of one env copy (CRC included); the boot script uses the same."""

ENV_FILE = "distbuild.env"
ENV_BACKUP = "distbuild.env.bak"

ORDER_VAR = "BOOT_ORDER"
TRIES_VAR = "BOOT_TRIES"
DEFAULT_TRIES = 3
MAX_TRIES = 9
"""U-Boot's ``setexpr`` prints hex and ``test -gt`` parses decimal: they agree
on single digits only, so try counters stay within 0..9."""

# A slot's files, under ``<slot>/`` on the boot partition.
KERNEL = "zImage"
INITRD = "initrd.img"
DTB = "board.dtb"
"""The slot's device tree; the boot script boots with it when present."""
BOOTARGS_FILE = "bootargs.env"
BOOTARGS_VAR = "distbuild_bootargs"
"""The kernel command line, in the slot's ``bootargs.env`` (``env import -t`` text)."""
VERSION_VAR = "distbuild_version"

_CRC = struct.Struct("<I")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def left_var(slot: str) -> str:
    """RAUC's try counter of ``slot``: ``BOOT_A_LEFT`` / ``BOOT_B_LEFT``."""
    return f"BOOT_{slot.upper()}_LEFT"


def good_var(slot: str) -> str:
    """``BOOT_<X>_GOOD``: 1 once the slot passed its health check, 0 while on trial."""
    return f"BOOT_{slot.upper()}_GOOD"


STATE_VARS = (
    ORDER_VAR,
    TRIES_VAR,
    *(left_var(s) for s in SLOTS),
    *(good_var(s) for s in SLOTS),
)
"""Every variable kept in the env file; the boot script imports and exports these."""


def dtb_path(slot: str) -> str:
    """The slot's device tree (``<slot>/board.dtb``), written with its kernel."""
    return f"{slot}/{DTB}"


def bootargs_path(slot: str) -> str:
    """The file with a slot's kernel command line, next to its kernel."""
    return f"{slot}/{BOOTARGS_FILE}"


# --- the env file formats ------------------------------------------------------


def _check_var(name: str, value: str) -> None:
    if not _NAME.fullmatch(name):
        raise DistbuildError(f"invalid U-Boot variable name {name!r}")
    if "\0" in value or "\n" in value:
        raise DistbuildError(f"U-Boot variable {name} holds a NUL or newline")


def pack_env(values: Mapping[str, str], size: int = ENV_SIZE) -> bytes:
    """Encode ``values`` as U-Boot's ``env export -c -s size`` does, byte for byte.

    U-Boot exports the variables sorted by name; so do we, so a file written
    here and one written by the boot script compare equal.
    """
    body = bytearray()
    for name in sorted(values):
        _check_var(name, values[name])
        body += f"{name}={values[name]}".encode() + b"\0"
    body += b"\0"
    if len(body) > size - _CRC.size:
        raise DistbuildError(
            f"U-Boot environment needs {len(body) + _CRC.size} bytes, more than {size}",
            hint="keep fewer or shorter variables in the boot state",
        )
    data = bytes(body) + b"\0" * (size - _CRC.size - len(body))
    return _CRC.pack(zlib.crc32(data)) + data


def unpack_env(blob: bytes) -> dict[str, str] | None:
    """Decode an env copy; ``None`` when it is too short or its CRC does not hold.

    Like ``env import -c``, the CRC covers everything after the first four
    bytes, so the whole file must be intact, padding included.
    """
    if len(blob) <= _CRC.size:
        return None
    (crc,) = _CRC.unpack_from(blob)
    data = blob[_CRC.size :]
    if zlib.crc32(data) != crc:
        return None
    values: dict[str, str] = {}
    for entry in data.split(b"\0"):
        if not entry:
            break  # the double NUL ends the list
        name, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            values[name] = value
    return values


def pack_text_env(values: Mapping[str, str]) -> bytes:
    """``name=value`` lines, the format of ``env import -t``."""
    for name, value in values.items():
        _check_var(name, value)
    return "".join(f"{name}={values[name]}\n" for name in sorted(values)).encode()


def unpack_text_env(text: bytes) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.decode(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name] = value
    return values


def initial_state(tries: int = DEFAULT_TRIES) -> dict[str, str]:
    """A fresh boot partition's state: no slot installed, so none has tries.

    :meth:`UBootControl.install` and :meth:`UBootControl.set_next` then make
    slot A bootable.
    """
    check_tries(tries)
    state = {ORDER_VAR: " ".join(s.upper() for s in SLOTS), TRIES_VAR: str(tries)}
    for slot in SLOTS:
        state[left_var(slot)] = "0"
        state[good_var(slot)] = "0"
    return state


def check_tries(tries: int) -> None:
    if not 1 <= tries <= MAX_TRIES:
        raise DistbuildError(
            f"{tries} tries is outside what the U-Boot script counts (1..{MAX_TRIES})",
            hint="choose a number of tries from 1 to 9",
        )


# --- the backend --------------------------------------------------------------


@register
class UBootControl(BootControl):
    """A/B state for U-Boot: the env file pair and ``<slot>/`` files on the boot partition."""

    chain = "u-boot"

    # reading

    def read_env(self) -> tuple[dict[str, str], str | None]:
        """The stored state and the copy it came from (``None``: no valid copy)."""
        for name in (ENV_FILE, ENV_BACKUP):
            blob = self.files.read(name)
            if blob is not None:
                values = unpack_env(blob)
                if values is not None:
                    return values, name
        return {}, None

    def _state(self) -> dict[str, str]:
        """The state as the boot script sees it, missing values defaulted the same way."""
        values, _ = self.read_env()
        tries = _digit(values.get(TRIES_VAR), DEFAULT_TRIES)
        state = {ORDER_VAR: values.get(ORDER_VAR) or " ".join(s.upper() for s in SLOTS)}
        state[TRIES_VAR] = str(tries)
        for slot in SLOTS:
            state[left_var(slot)] = str(_digit(values.get(left_var(slot)), tries))
            state[good_var(slot)] = "1" if values.get(good_var(slot)) == "1" else "0"
        return state

    def _pickable(self, state: Mapping[str, str], slot: str) -> bool:
        """Whether the script would boot ``slot`` when it comes up in ``BOOT_ORDER``.

        A good slot that ran out of tries is given them back by the script once
        no slot has any left, so it counts as pickable.
        """
        return int(state[left_var(slot)]) > 0 or state[good_var(slot)] == "1"

    def entry(self, slot: str) -> dict[str, str]:
        """The variables of a slot's boot entry (``<slot>/bootargs.env``), {} if none."""
        blob = self.files.read(bootargs_path(slot))
        return unpack_text_env(blob) if blob is not None else {}

    def states(self) -> dict[str, SlotState]:
        state = self._state()
        order = [s.lower() for s in state[ORDER_VAR].split()]
        out: dict[str, SlotState] = {}
        for slot in SLOTS:
            good = state[good_var(slot)] == "1"
            out[slot] = SlotState(
                slot=slot,
                bootable=slot in order and self._pickable(state, slot),
                tries_left=0 if good else int(state[left_var(slot)]),
                good=good,
                version=self.entry(slot).get(VERSION_VAR),
            )
        return out

    def boot_order(self) -> list[str]:
        state = self._state()
        order: list[str] = []
        for word in state[ORDER_VAR].split():
            slot = word.lower()
            if slot in SLOTS and slot not in order and self._pickable(state, slot):
                order.append(slot)
        return order

    def counters(self) -> dict[str, str]:
        """The raw stored variables (for ``status`` output and tests)."""
        return self._state()

    # writing

    def _write(self, state: Mapping[str, str]) -> None:
        blob = pack_env(state)
        # Primary first, backup second: whichever write a power cut interrupts,
        # the other copy still holds a whole state, and a valid primary is
        # never older than the backup.
        self.files.write(ENV_FILE, blob)
        self.files.write(ENV_BACKUP, blob)

    def mark_unbootable(self, slot: str) -> None:
        check_slot(slot)
        state = self._state()
        state[left_var(slot)] = "0"
        state[good_var(slot)] = "0"
        self._write(state)

    def install(self, slot: str, boot: SlotBoot) -> None:
        check_slot(slot)
        cmdline = " ".join(
            [w for w in boot.cmdline.split() if not w.startswith("distbuild.slot=")]
            + [f"distbuild.slot={slot}"]
        )
        entry = pack_text_env({BOOTARGS_VAR: cmdline, VERSION_VAR: boot.version})
        self.mark_unbootable(slot)
        # The entry goes first and comes back last: a slot whose files are
        # half-written has none, so neither the script nor states() take it.
        self.files.remove(bootargs_path(slot))
        self.files.write(f"{slot}/{KERNEL}", boot.kernel)
        self.files.write(f"{slot}/{INITRD}", boot.initrd)
        if boot.dtb is not None:
            self.files.write(dtb_path(slot), boot.dtb)
        else:
            # A DTB of an older release must not boot this slot's kernel.
            self.files.remove(dtb_path(slot))
        self.files.write(bootargs_path(slot), entry)

    def set_next(self, slot: str, tries: int = DEFAULT_TRIES) -> None:
        check_slot(slot)
        check_tries(tries)
        state = self._state()
        state[ORDER_VAR] = _first(slot, state[ORDER_VAR])
        state[left_var(slot)] = str(tries)
        state[good_var(slot)] = "0"
        self._write(state)

    def mark_good(self, slot: str) -> None:
        check_slot(slot)
        state = self._state()
        state[ORDER_VAR] = _first(slot, state[ORDER_VAR])
        # RAUC's "good": the counter back to its full value, so the slot
        # survives the decrements of its own later boots.
        state[left_var(slot)] = state[TRIES_VAR]
        state[good_var(slot)] = "1"
        self._write(state)


def _first(slot: str, order: str) -> str:
    rest = [w for w in order.split() if w.lower() != slot and w.lower() in SLOTS]
    return " ".join([slot.upper(), *rest])


def _digit(text: str | None, default: int) -> int:
    if text is None or len(text) != 1 or not text.isdigit():
        return default
    return int(text)
