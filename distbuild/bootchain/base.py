"""The boot chain interface, build side: what goes on a fresh boot partition, how qemu boots it.

A :class:`BootChain` knows one firmware + boot loader combination (UEFI with
systemd-boot; U-Boot). It does not know slots: slot files and state are
written by the matching :mod:`distbuild.core.bootctl` backend, the same code a node
runs, so an image built here and a node updated later agree byte for byte.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from distbuild.core.errors import DistbuildError, RecipeError
from distbuild.model.recipe import Recipe

# What a fresh boot partition holds: partition path -> bytes or a host file.
PartitionFiles = dict[str, bytes | Path]


class BootChain(ABC):
    """A firmware + boot loader pair."""

    name: ClassVar[str]  # the recipe's boot.chain and the bootctl backend's name
    # GPT label and type code (sgdisk) of the boot partition.
    partition_label: ClassVar[str]
    partition_type: ClassVar[str]
    # Target-arch Debian packages loader_files() takes binaries from. They are
    # locked (images/<image>-boot.<arch>.lock.json, with the initramfs tools)
    # and unpacked without running anything, never taken from the host.
    packages: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def loader_files(self, recipe: Recipe, tools: Path) -> PartitionFiles:
        """Boot loader binaries and configuration for an empty boot partition.

        ``tools`` is a tree with :attr:`packages` (and the initramfs tools)
        unpacked for the target arch.
        """

    @abstractmethod
    def firmware(self, recipe: Recipe) -> dict[str, Path]:
        """The host firmware files qemu needs, from the recipe's ``firmware:``.

        Raises a :class:`DistbuildError` naming the file and the package to
        install when one is missing.
        """

    @abstractmethod
    def qemu_args(self, recipe: Recipe, disk: Path, state: Path) -> list[str]:
        """qemu-system arguments for machine, firmware and disk (not the binary,
        accelerator, memory or serial: :mod:`distbuild.qemu` adds those).

        ``disk`` is the image (or overlay) to boot, qcow2 or raw by suffix;
        ``state`` a private directory for writable firmware state (a UEFI vars
        copy, say), created by the caller and kept across reboots of one run.
        """


def require_firmware(recipe: Recipe, key: str, package: str) -> Path:
    """The recipe's ``firmware.<key>`` path, which must exist on the host."""
    files = dict(recipe.firmware)
    if key not in files:
        raise RecipeError(
            f"no firmware.{key} for the {recipe.boot_chain} boot chain",
            hint=f"add 'firmware: {{{key}: <path>}}' (Debian package {package})",
            where=str(recipe.path),
            key=f"firmware.{key}",
        )
    path = Path(files[key])
    if not path.is_file():
        raise DistbuildError(
            f"firmware file {path} not found ({recipe.path.name}: firmware.{key})",
            hint=f"install it with 'apt-get install {package}', or fix the path in the recipe",
        )
    return path
