"""UEFI with systemd-boot (amd64, arm64): the ESP's loader files, qemu with OVMF/AAVMF.

The boot loader is installed at the removable-media path
(``EFI/BOOT/BOOT<ARCH>.EFI``), so firmware with empty variables (a fresh
board, a fresh OVMF vars copy) boots it without an NVRAM entry. Slot entries
are written by :mod:`distbuild.core.bootctl.systemd_boot`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from distbuild.bootchain.base import BootChain, PartitionFiles, require_firmware
from distbuild.core.errors import DistbuildError
from distbuild.model.recipe import Recipe

# No menu, no default: systemd-boot boots the first entry of its own order,
# which is how boot counting falls back (see core/bootctl/systemd_boot.py).
LOADER_CONF = """timeout 0
editor no
auto-entries no
auto-firmware no
random-seed-mode off
"""

# Where Debian's UEFI firmware packages put their images, for hints.
_FIRMWARE_PACKAGES = {"/usr/share/OVMF/": "ovmf", "/usr/share/AAVMF/": "qemu-efi-aarch64"}


class SystemdBootChain(BootChain):
    name = "systemd-boot"
    partition_label = "esp"
    partition_type = "ef00"
    packages = ("systemd-boot-efi",)

    def loader_files(self, recipe: Recipe, tools: Path) -> PartitionFiles:
        efi = recipe.arch.efi_arch
        if efi is None:
            raise DistbuildError(f"{recipe.arch.name} has no UEFI boot loader in distbuild")
        binary = tools / f"usr/lib/systemd/boot/efi/systemd-boot{efi}.efi"
        if not binary.is_file():
            raise DistbuildError(
                f"systemd-boot-efi for {recipe.arch.debian} has no {binary.name}",
                hint="check the boot lock (images/<image>-boot.<arch>.lock.json)",
            )
        return {
            f"EFI/BOOT/BOOT{efi.upper()}.EFI": binary,
            "loader/loader.conf": LOADER_CONF.encode(),
        }

    def firmware(self, recipe: Recipe) -> dict[str, Path]:
        files = dict(recipe.firmware)
        package = next(
            (pkg for d, pkg in _FIRMWARE_PACKAGES.items() if files.get("code", "").startswith(d)),
            "the package that ships it",
        )
        return {
            "code": require_firmware(recipe, "code", package),
            "vars": require_firmware(recipe, "vars", package),
        }

    def qemu_args(self, recipe: Recipe, disk: Path, state: Path) -> list[str]:
        fw = self.firmware(recipe)
        vars_copy = state / "efivars.fd"
        if not vars_copy.exists():
            # The firmware writes its variables (and systemd-boot its own);
            # the packaged template stays untouched.
            shutil.copyfile(fw["vars"], vars_copy)
        fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
        args = ["-machine", recipe.qemu_machine]
        if recipe.qemu_cpu:
            args += ["-cpu", recipe.qemu_cpu]
        return [
            *args,
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={fw['code']}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-drive",
            f"if=none,id=disk0,format={fmt},file={disk}",
            "-device",
            "virtio-blk-pci,drive=disk0",
        ]
