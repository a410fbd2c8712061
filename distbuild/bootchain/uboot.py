"""The U-Boot boot chain (armv7): the A/B boot script, its uImage wrapper, qemu's arguments.

The script is RAUC's U-Boot integration, kept on the FAT boot partition
instead of in U-Boot's own environment (so it works on any U-Boot with
``fatwrite``, whatever its env storage): read the state with
``env import -c`` (primary copy, else backup), walk ``BOOT_ORDER``, take the
first slot with tries left, decrement its counter and write both copies back
with ``env export -c`` + ``fatwrite`` *before* booting it. A slot that fails
(kernel panic with ``panic=N``, init dying, a verity error) reboots into the
script, which counts one more try; at zero the slot is skipped and the next
one in ``BOOT_ORDER`` boots with no help from user space. When no slot has
tries left, the slots that once passed their health check get their tries
back (all slots, if none did) and the board resets.

It relies only on distro boot's variables (``devtype``, ``devnum``,
``distro_bootpart``, ``kernel_addr_r``, ``ramdisk_addr_r``) and on commands
every stock U-Boot build has (``load``, ``fatwrite``, ``env import/export``,
``setexpr``, ``bootz``), not on a bootcount driver, so the same logic carries
over to a board such as a Banana Pi. The device tree is the slot's
``<slot>/board.dtb`` when it ships one (a board disk, or an update that
installs the board's DTB), else the one U-Boot runs with (on qemu: the
machine's own). ``board.env`` (``distbuild_board``, ``distbuild_console``),
written once when a board's disk is made, adds the board's console.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from distbuild.bootchain.base import BootChain, PartitionFiles, require_firmware
from distbuild.core.bootctl.base import SLOTS
from distbuild.core.bootctl.uboot import (
    BOOTARGS_FILE,
    BOOTARGS_VAR,
    ENV_BACKUP,
    ENV_FILE,
    ENV_SIZE,
    INITRD,
    KERNEL,
    ORDER_VAR,
    STATE_VARS,
    TRIES_VAR,
    check_tries,
    good_var,
    initial_state,
    left_var,
    pack_env,
)
from distbuild.model.recipe import Recipe

SCRIPT = "boot.scr"
BOARD_DTB = "board.dtb"
"""A slot's device tree, ``<slot>/board.dtb``, loaded when present."""
BOARD_ENV = "board.env"
"""The board's variables (``env import -t`` text) at the boot partition's root."""
BOARD_VARS = ("distbuild_board", "distbuild_console", "distbuild_board_args")

# Legacy uImage header (include/image.h): magic, header CRC, time, data size,
# load address, entry point, data CRC, OS, arch, type, compression, name.
_HEADER = struct.Struct(">IIIIIIIBBBB32s")
_MAGIC = 0x27051956
_IH_OS_LINUX = 5
_IH_ARCH_ARM = 2
_IH_TYPE_SCRIPT = 6
_IH_COMP_NONE = 0


_PART = "${devtype} ${devnum}:${distro_bootpart}"
"""The boot partition, in distro boot's variables."""


def boot_script(tries: int) -> str:
    """The text of the A/B boot script; ``tries`` is the default try count."""
    check_tries(tries)
    size = f"{ENV_SIZE:#x}"
    state_vars = " ".join(STATE_VARS)
    # Write the state back, both copies: after picking a slot, before booting it.
    save = [
        f"env export -c -s {size} ${{kernel_addr_r}} {state_vars}",
        f"fatwrite {_PART} ${{kernel_addr_r}} {ENV_FILE} {size}",
        f"fatwrite {_PART} ${{kernel_addr_r}} {ENV_BACKUP} {size}",
    ]
    lines = [
        *_load_state(tries),
        *_pick_slot(),
        *_when_no_slot_left(save),
        # Count this try before booting: a slot that hangs or panics has used it.
        *save,
        *_boot_slot(),
    ]
    return "\n".join(lines) + "\n"


def _load_state(tries: int) -> list[str]:
    """Read the state (primary copy, else backup, else defaults) and fill in missing values."""
    state_vars = " ".join(STATE_VARS)
    lines = [
        "# distbuild A/B boot: RAUC's BOOT_ORDER / BOOT_<X>_LEFT try counters,",
        f"# kept in {ENV_FILE} (+ {ENV_BACKUP}) on this partition, CRC-checked.",
        'echo "distbuild: A/B boot script"',
    ]
    # Start from a clean slate: stale values in U-Boot's own env must not leak in.
    lines += [f"setenv {v}" for v in (*STATE_VARS, *BOARD_VARS)]
    # The board's variables (console), written once when the disk was made.
    lines += [
        f"if load {_PART} ${{kernel_addr_r}} {BOARD_ENV} && env import -t ${{kernel_addr_r}} ${{filesize}} {' '.join(BOARD_VARS)}; then",
        '  echo "distbuild: board ${distbuild_board}"',
        "fi",
    ]
    lines += [
        f"if load {_PART} ${{kernel_addr_r}} {ENV_FILE} && env import -c ${{kernel_addr_r}} ${{filesize}} {state_vars}; then",
        f'  echo "distbuild: boot state from {ENV_FILE}"',
        f"elif load {_PART} ${{kernel_addr_r}} {ENV_BACKUP} && env import -c ${{kernel_addr_r}} ${{filesize}} {state_vars}; then",
        f'  echo "distbuild: boot state from {ENV_BACKUP} (primary copy damaged)"',
        "else",
        '  echo "distbuild: no valid boot state, using defaults"',
        "fi",
        f'test -n "${{{TRIES_VAR}}}" || setenv {TRIES_VAR} {tries}',
        f'test -n "${{{ORDER_VAR}}}" || setenv {ORDER_VAR} "{" ".join(s.upper() for s in SLOTS)}"',
    ]
    for slot in SLOTS:
        lines.append(f'test -n "${{{left_var(slot)}}}" || setenv {left_var(slot)} ${{{TRIES_VAR}}}')
        lines.append(f'test -n "${{{good_var(slot)}}}" || setenv {good_var(slot)} 0')
    return lines


def _pick_slot() -> list[str]:
    """Walk BOOT_ORDER; take the first slot with tries left and use one of them."""
    lines = [
        "setenv distbuild_slot",
        f"for s in ${{{ORDER_VAR}}}; do",
        '  if test -n "${distbuild_slot}"; then',
        "    true",
    ]
    for slot in SLOTS:
        left = left_var(slot)
        lines += [
            f'  elif test "${{s}}" = "{slot.upper()}"; then',
            f"    if test ${{{left}}} -gt 0; then",
            f"      setexpr {left} ${{{left}}} - 1",
            f"      setenv distbuild_slot {slot}",
            f'      echo "distbuild: trying slot {slot}, ${{{left}}} tries left after this one"',
            "    fi",
        ]
    return [*lines, "  fi", "done"]


def _when_no_slot_left(save: list[str]) -> list[str]:
    """No slot left: give the known-good slots (or, if none, all) their tries back and reset."""
    any_good = " -o ".join(f"${{{good_var(s)}}} = 1" for s in SLOTS)
    lines = [
        'if test -z "${distbuild_slot}"; then',
        '  echo "distbuild: no slot has tries left; restoring known-good slots and resetting"',
        f"  if test {any_good}; then",
    ]
    for slot in SLOTS:
        lines.append(
            f"    if test ${{{good_var(slot)}}} = 1; then setenv {left_var(slot)} ${{{TRIES_VAR}}}; fi"
        )
    lines.append("  else")
    for slot in SLOTS:
        lines.append(f"    setenv {left_var(slot)} ${{{TRIES_VAR}}}")
    return [*lines, "  fi", *("  " + c for c in save), "  reset", "fi"]


def _boot_slot() -> list[str]:
    """Load the picked slot's boot arguments, device tree, initramfs and kernel, and boot it."""
    return [
        f"if load {_PART} ${{kernel_addr_r}} ${{distbuild_slot}}/{BOOTARGS_FILE} && env import -t ${{kernel_addr_r}} ${{filesize}} {BOOTARGS_VAR}; then",
        f'  setenv bootargs "${{{BOOTARGS_VAR}}}"',
        "else",
        '  echo "distbuild: slot ${distbuild_slot} has no boot entry; resetting"',
        "  reset",
        "fi",
        # The board's console (board.env), after the slot's own arguments: the
        # last console= is the one the kernel makes /dev/console.
        'if test -n "${distbuild_console}"; then',
        '  setenv bootargs "${bootargs} console=${distbuild_console}"',
        "fi",
        'if test -n "${distbuild_board_args}"; then',
        '  setenv bootargs "${bootargs} ${distbuild_board_args}"',
        "fi",
        # The slot's board DTB when it ships one, else the one U-Boot runs with
        # (on qemu, the machine's generated DTB).
        "setenv distbuild_fdt ${fdtcontroladdr}",
        f"if load {_PART} ${{fdt_addr_r}} ${{distbuild_slot}}/{BOARD_DTB}; then",
        "  setenv distbuild_fdt ${fdt_addr_r}",
        "fi",
        f"if load {_PART} ${{ramdisk_addr_r}} ${{distbuild_slot}}/{INITRD}; then",
        "  setenv distbuild_initrd ${ramdisk_addr_r}:${filesize}",
        f"  if load {_PART} ${{kernel_addr_r}} ${{distbuild_slot}}/{KERNEL}; then",
        '    echo "distbuild: booting slot ${distbuild_slot}"',
        "    bootz ${kernel_addr_r} ${distbuild_initrd} ${distbuild_fdt}",
        "  fi",
        "fi",
        'echo "distbuild: slot ${distbuild_slot} did not boot; resetting"',
        "reset",
    ]


def script_image(text: str, name: str = "distbuild A/B boot", timestamp: int = 0) -> bytes:
    """Wrap a script in a legacy uImage, as ``mkimage -A arm -O linux -T script -C none`` does.

    A script image is a multi-file image with one part: a table of part sizes
    (big-endian, ended by 0), then the script.
    """
    script = text.encode()
    data = struct.pack(">II", len(script), 0) + script
    fields = [
        _MAGIC,
        0,
        timestamp,
        len(data),
        0,
        0,
        zlib.crc32(data),
        _IH_OS_LINUX,
        _IH_ARCH_ARM,
        _IH_TYPE_SCRIPT,
        _IH_COMP_NONE,
        name.encode()[:31].ljust(32, b"\0"),
    ]
    header = _HEADER.pack(*fields)
    fields[1] = zlib.crc32(header)
    return _HEADER.pack(*fields) + data


class UBootChain(BootChain):
    """U-Boot's distro boot finds ``boot.scr`` on the boot partition; the script does A/B."""

    name = "u-boot"
    partition_label = "boot"
    # The EFI system partition type: U-Boot's ``part list -bootable`` (distro
    # boot's partition scan) takes it as bootable, wherever it sits on the disk.
    partition_type = "ef00"
    packages = ()

    def loader_files(self, recipe: Recipe, tools: Path) -> PartitionFiles:
        env = pack_env(initial_state(recipe.boot_tries))
        return {
            SCRIPT: script_image(boot_script(recipe.boot_tries)),
            ENV_FILE: env,
            ENV_BACKUP: env,
        }

    def firmware(self, recipe: Recipe) -> dict[str, Path]:
        return {"u-boot": require_firmware(recipe, "u-boot", "u-boot-qemu")}

    def qemu_args(self, recipe: Recipe, disk: Path, state: Path) -> list[str]:
        machine = ["-M", recipe.qemu_machine]
        if recipe.qemu_cpu:
            machine += ["-cpu", recipe.qemu_cpu]
        fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
        return [
            *machine,
            "-bios",
            str(self.firmware(recipe)["u-boot"]),
            "-drive",
            f"if=none,id=disk0,format={fmt},file={disk}",
            "-device",
            "virtio-blk-device,drive=disk0",
        ]
