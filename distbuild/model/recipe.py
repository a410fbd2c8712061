"""Per-architecture recipes (``recipes/<arch>.yaml``) as frozen models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import names
from distbuild.core.arch import ARCHES, BOOT_CHAINS, Arch, Platform, normalize
from distbuild.core.errors import RecipeError
from distbuild.model import loader
from distbuild.model.board import DEFAULT_BOARD, Board, boards_dir, load_board, qemu_board
from distbuild.model.boundary import Boundary
from distbuild.model.schema import Field, check

_MIB = (1, 1 << 20)  # partition sizes: 1 MiB to 1 TiB

RECIPE_SPEC = {
    "arch": Field(str, required=True, choices=tuple(ARCHES), doc="the distbuild arch name"),
    "description": Field(str, default=""),
    "debian": Field(
        {
            "arch": Field(str, required=True, doc="the Debian architecture, e.g. armhf"),
            "suite": Field(str, required=True, doc="the Debian suite, e.g. bookworm"),
            "components": Field("str-list", default=["main"]),
            "mirror": Field(str, doc="a mirror URL; default: the host's apt sources"),
        },
        required=True,
    ),
    "kernel": Field(
        {
            "package": Field(str, required=True, doc="the Debian kernel package"),
            "flavour": Field(str, required=True),
            "modules": Field("str-list", doc="modules the initramfs loads, in order"),
        },
        required=True,
    ),
    "console": Field(str, required=True, doc="the serial console device, e.g. ttyAMA0"),
    "boot": Field(
        {
            "chain": Field(
                str,
                required=True,
                choices=BOOT_CHAINS,
                doc="systemd-boot (UEFI: amd64, arm64) or u-boot (armv7)",
            ),
            "tries": Field(int, default=3, range=(1, 100)),
        },
        required=True,
    ),
    "firmware": Field("str-map", doc="paths of firmware files on the host"),
    "qemu": Field(
        {
            "machine": Field(str, required=True),
            "cpu": Field(str),
            "memory": Field(int, default=512, range=(16, 1 << 20), doc="MiB, 16 to 1048576"),
            "extra": Field("str-list"),
        },
        required=True,
    ),
    "oci": Field({"platform": Field(str, required=True)}, required=True),
    "boards": Field("str-list", default=["qemu"]),
    "disk": Field(
        {
            "esp_mib": Field(int, default=64, range=_MIB),
            "root_mib": Field(int, default=160, range=_MIB),
            "data_mib": Field(int, default=64, range=_MIB),
        }
    ),
}


@dataclass(frozen=True)
class Recipe:
    arch: Arch
    path: Path
    suite: str
    components: tuple[str, ...]
    mirror: str | None
    kernel_package: str
    kernel_flavour: str
    kernel_modules: tuple[str, ...]
    console: str
    boot_chain: str
    boot_tries: int
    firmware: tuple[tuple[str, str], ...]
    qemu_machine: str
    qemu_cpu: str | None
    qemu_memory: int
    qemu_extra: tuple[str, ...]
    platform: Platform
    boards: tuple[Board, ...]  # the first is the default
    esp_mib: int
    root_mib: int
    data_mib: int

    @property
    def debian_arch(self) -> str:
        return self.arch.debian

    @property
    def initramfs_modules(self) -> tuple[str, ...]:
        """The recipe's modules, then every board's SoC drivers: one initramfs boots them all."""
        extra = [m for b in self.boards for m in b.modules]
        return tuple(dict.fromkeys([*self.kernel_modules, *extra]))

    def board(self, name: str) -> Board:
        for board in self.boards:
            if board.name == name:
                return board
        raise RecipeError(
            f"{self.arch.name} has no board {name!r}",
            hint=f"its boards: {', '.join(b.name for b in self.boards)} "
            f"(recipe key boards: in {self.path.name})",
        )


def load_recipe(project: Path, arch: Arch, allow: Sequence[Path] = ()) -> Recipe:
    """Load ``recipes/<arch>.yaml``; it may read files in ``project`` and ``allow`` only."""
    path = project / "recipes" / f"{arch.name}.yaml"
    if not path.is_file():
        raise RecipeError(
            f"no recipe for {arch.name}",
            hint=f"create {path.relative_to(project)} (see the other recipes)",
            where=str(path),
        )
    doc = loader.load(path, {"arch": arch}, Boundary.of(project, allow))
    data = check(doc, RECIPE_SPEC)
    _check_arch(doc, data, arch)
    _check_boards(doc, data["boards"])
    boards = _load_boards(doc, project, arch, data["boards"], tuple(allow))
    d, k, q, disk = data["debian"], data["kernel"], data["qemu"], data["disk"]
    return Recipe(
        arch=arch,
        path=path,
        suite=d["suite"],
        components=tuple(d["components"]),
        mirror=d["mirror"],
        kernel_package=k["package"],
        kernel_flavour=k["flavour"],
        kernel_modules=tuple(k["modules"]),
        console=data["console"],
        boot_chain=data["boot"]["chain"],
        boot_tries=data["boot"]["tries"],
        firmware=tuple(sorted(data["firmware"].items())),
        qemu_machine=q["machine"],
        qemu_cpu=q["cpu"],
        qemu_memory=q["memory"],
        qemu_extra=tuple(q["extra"]),
        platform=arch.platform,
        boards=boards,
        esp_mib=disk["esp_mib"],
        root_mib=disk["root_mib"],
        data_mib=disk["data_mib"],
    )


def _check_arch(doc: loader.Document, data: dict[str, Any], arch: Arch) -> None:
    """The recipe's arch, Debian arch, OCI platform and boot chain are ``arch``'s."""
    if data["arch"] != arch.name:
        raise doc.error(("arch",), f"says {data['arch']!r} but the file is for {arch.name!r}")
    if data["debian"]["arch"] != arch.debian:
        raise doc.error(
            ("debian", "arch"),
            f"{data['debian']['arch']!r} does not match {arch.name} (Debian {arch.debian!r})",
        )
    try:
        platform = Platform.parse(data["oci"]["platform"])
    except RecipeError:
        raise
    except Exception as e:
        raise doc.error(("oci", "platform"), str(e)) from None
    if normalize(platform) != normalize(arch.platform):
        raise doc.error(
            ("oci", "platform"),
            f"{platform} is not the platform of {arch.name} ({arch.platform})",
            hint="see DESIGN.md §2",
        )
    if data["boot"]["chain"] != arch.boot_chain:
        raise doc.error(
            ("boot", "chain"),
            f"{data['boot']['chain']!r} is not the boot chain distbuild supports for {arch.name}",
            hint=f"use {arch.boot_chain!r}",
        )


def _check_boards(doc: loader.Document, boards: list[str]) -> None:
    for i, board in enumerate(boards):
        if reason := names.problem(board):
            raise doc.error(
                ("boards", i),
                f"{board!r} is not a valid board: {reason}",
                hint=f"a board is {names.GRAMMAR}",
            )


def _load_boards(
    doc: loader.Document, project: Path, arch: Arch, names_: list[str], allow: tuple[Path, ...]
) -> tuple[Board, ...]:
    """The recipe's boards, each from ``recipes/boards/<board>.yaml`` and made for ``arch``."""
    boards = []
    for i, name in enumerate(names_):
        if name == DEFAULT_BOARD and not (boards_dir(project) / f"{name}.yaml").is_file():
            boards.append(qemu_board((arch.name,)))
            continue
        board = load_board(project, name, allow)
        if arch.name not in board.arches:
            raise doc.error(
                ("boards", i),
                f"board {name!r} is for {', '.join(board.arches)}, not {arch.name}",
                hint=f"add {arch.name} to arches: in {board.where}, or drop it here",
            )
        boards.append(board)
    if len({b.name for b in boards}) != len(boards):
        raise doc.error(("boards",), "names a board twice")
    if not boards:
        raise doc.error(("boards",), "is empty", hint=f"list at least {DEFAULT_BOARD}")
    return tuple(boards)
