"""Board definitions (``recipes/boards/<board>.yaml``) as frozen models.

A board is what differs between machines of one arch: where its boot loader
sits on the card and which Debian package it comes from, how the partition
table must leave room for it, which device tree the kernel gets, which SoC
drivers the initramfs loads, the console, U-Boot's env location, and firmware
files for the boot partition. Every file a board names is a path inside its
target-arch packages (unpacked from the boot lock) or the kernel package,
never a host file: paths are relative, with no ``..``, and resolved inside
those trees at build time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from distbuild.core import names
from distbuild.core.arch import ARCHES
from distbuild.core.errors import RecipeError
from distbuild.model import loader
from distbuild.model.boundary import Boundary
from distbuild.model.loader import KeyPath
from distbuild.model.schema import Field, check

KIB = 1024
MAX_LOADER_OFFSET = 64 * KIB * KIB  # a loader lives in the first few MiB of a card
DEFAULT_BOARD = "qemu"
ENV_LOCATIONS = ("fat", "mmc", "nowhere")

BOARD_SPEC = {
    "board": Field(str, required=True, doc="the board's name, the same as its file's"),
    "arches": Field("str-list", required=True, doc="the distbuild arches the board runs"),
    "description": Field(str, default=""),
    "soc": Field(str, default="", doc="the system on chip, e.g. Allwinner H3"),
    "packages": Field("str-list", doc="target-arch Debian packages the loader files come from"),
    "loader": Field(list, doc="files written raw onto the card: [{file: PATH, offset: BYTES}]"),
    "partitions": Field(
        {
            "first_kib": Field(int, default=1024, range=(1, 64 * KIB), doc="KiB, 1 to 65536"),
            "gpt_entries": Field(int, default=128, range=(4, 128), doc="4 to 128, a multiple of 4"),
            "hybrid_mbr": Field(bool, default=False, doc="also list the boot partition in the MBR"),
        }
    ),
    "device_tree": Field(str, doc="the DTB, relative to the kernel's /usr/lib/linux-image-<rel>"),
    "console": Field(str, doc="the kernel's console, e.g. ttyS0,115200"),
    "modules": Field("str-list", doc="SoC drivers the initramfs loads (MMC, Ethernet)"),
    "kernel_args": Field("str-list", doc="words the board adds to the kernel command line"),
    "u_boot": Field(
        {
            "config": Field(str, doc="the U-Boot build's .config (gzip or plain) in a package"),
            "env": Field(str, default="fat", choices=ENV_LOCATIONS),
            "env_file": Field(str, default="uboot.env", doc="CONFIG_ENV_FAT_FILE"),
        }
    ),
    "boot_files": Field(list, doc="package files for the boot partition: [{file: PATH, to: PATH}]"),
    "boot_text": Field("str-map", doc="text files for the boot partition: {PATH: TEXT}"),
}


@dataclass(frozen=True)
class LoaderFile:
    file: str  # inside the board's unpacked packages
    offset: int  # bytes from the start of the card


@dataclass(frozen=True)
class BootFile:
    file: str  # inside the board's unpacked packages
    to: str  # on the boot partition


@dataclass(frozen=True)
class UBootConfig:
    config: str | None  # the U-Boot build's .config inside a package, for the env check
    env: str  # fat | mmc | nowhere
    env_file: str


@dataclass(frozen=True)
class Board:
    name: str
    path: Path | None  # None for the built-in default
    arches: tuple[str, ...]
    description: str = ""
    soc: str = ""
    packages: tuple[str, ...] = ()
    loader: tuple[LoaderFile, ...] = ()
    first_partition: int = KIB * KIB  # bytes
    gpt_entries: int = 128
    hybrid_mbr: bool = False
    device_tree: str | None = None
    console: str | None = None
    modules: tuple[str, ...] = ()
    kernel_args: tuple[str, ...] = ()
    u_boot: UBootConfig | None = None
    boot_files: tuple[BootFile, ...] = ()
    boot_text: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        return str(self.path) if self.path else f"board {self.name}"


def boards_dir(project: Path) -> Path:
    return project / "recipes" / "boards"


def load_board(project: Path, name: str, allow: tuple[Path, ...] = ()) -> Board:
    """Load ``recipes/boards/<name>.yaml``; ``name`` must follow the names grammar."""
    if reason := names.problem(name):
        raise RecipeError(
            f"{name!r} is not a valid board: {reason}", hint=f"a board is {names.GRAMMAR}"
        )
    path = boards_dir(project) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(board_names(project)) or "none"
        raise RecipeError(
            f"no board definition {name!r}",
            hint=f"create {path.relative_to(project)} (known boards: {known})",
        )
    doc = loader.load(path, {}, Boundary.of(project, allow))
    data = check(doc, BOARD_SPEC)
    if data["board"] != name:
        raise doc.error(("board",), f"says {data['board']!r} but the file is {path.name}")
    _check_names(doc, data)
    parts = data["partitions"]
    if parts["gpt_entries"] % 4:
        raise doc.error(
            ("partitions", "gpt_entries"), "must be a multiple of 4 (4 entries a sector)"
        )
    uboot = data["u_boot"]
    return Board(
        name=name,
        path=path,
        arches=tuple(data["arches"]),
        description=data["description"],
        soc=data["soc"],
        packages=tuple(data["packages"]),
        loader=tuple(_loader(doc, data["loader"])),
        first_partition=parts["first_kib"] * KIB,
        gpt_entries=parts["gpt_entries"],
        hybrid_mbr=parts["hybrid_mbr"],
        device_tree=_opt_path(doc, ("device_tree",), data["device_tree"]),
        console=_console(doc, data["console"]),
        modules=tuple(data["modules"]),
        kernel_args=_kernel_args(doc, data["kernel_args"]),
        u_boot=_uboot(doc, uboot) if uboot["config"] is not None else None,
        boot_files=tuple(_boot_files(doc, data["boot_files"])),
        boot_text=tuple(
            (_rel_path(doc, ("boot_text", k), k), v) for k, v in sorted(data["boot_text"].items())
        ),
    )


def board_names(project: Path) -> list[str]:
    d = boards_dir(project)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _check_names(doc: loader.Document, data: dict[str, Any]) -> None:
    for i, arch in enumerate(data["arches"]):
        if arch not in ARCHES:
            raise doc.error(
                ("arches", i), f"{arch!r} is not an arch", hint=f"use {', '.join(ARCHES)}"
            )
    for key in ("packages", "modules"):
        for i, value in enumerate(data[key]):
            if not _PACKAGE_CHARS.issuperset(value) or not value[:1].isalnum():
                raise doc.error((key, i), f"{value!r} is not a Debian package or module name")


_PACKAGE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789+-._")


def _rel_path(doc: loader.Document, at: KeyPath, value: object) -> str:
    """A relative POSIX path with no ``..``: resolved inside a package tree at build time."""
    if not isinstance(value, str) or not value or "\0" in value or "\\" in value:
        raise doc.error(at, f"{value!r} is not a relative path")
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts or len(value) > 255:
        raise doc.error(
            at,
            f"{value!r} must be relative, without '..'",
            hint="name a file inside the package (or kernel) tree, e.g. usr/lib/u-boot/...",
        )
    return pure.as_posix()


def _opt_path(doc: loader.Document, at: KeyPath, value: str | None) -> str | None:
    return None if value is None else _rel_path(doc, at, value)


def _entries(
    doc: loader.Document, key: str, value: Any, fields: dict[str, Field]
) -> list[dict[str, Any]]:
    return [check(doc, fields, item, (key, i)) for i, item in enumerate(value or [])]


def _loader(doc: loader.Document, value: Any) -> list[LoaderFile]:
    spec = {
        "file": Field(str, required=True),
        "offset": Field(int, required=True, range=(0, MAX_LOADER_OFFSET), doc="bytes on the card"),
    }
    return [
        LoaderFile(_rel_path(doc, ("loader", i, "file"), e["file"]), e["offset"])
        for i, e in enumerate(_entries(doc, "loader", value, spec))
    ]


def _boot_files(doc: loader.Document, value: Any) -> list[BootFile]:
    spec = {"file": Field(str, required=True), "to": Field(str, required=True)}
    return [
        BootFile(
            _rel_path(doc, ("boot_files", i, "file"), e["file"]),
            _rel_path(doc, ("boot_files", i, "to"), e["to"]),
        )
        for i, e in enumerate(_entries(doc, "boot_files", value, spec))
    ]


def _kernel_args(doc: loader.Document, values: list[str]) -> tuple[str, ...]:
    for i, value in enumerate(values):
        if not names.is_kernel_arg(value):
            raise doc.error(
                ("kernel_args", i), f"{value!r} is not one plain kernel argument such as maxcpus=1"
            )
        key = value.split("=", 1)[0]
        if key in _OWNED_ARGS or key.startswith("distbuild."):
            raise doc.error(("kernel_args", i), f"{value!r}: distbuild sets that argument itself")
    return tuple(values)


# What the slot's boot entry and the board's console already decide.
_OWNED_ARGS = frozenset({"root", "init", "rdinit", "console", "ro", "rw", "panic"})


def _console(doc: loader.Document, value: str | None) -> str | None:
    if value is not None and not names.is_console(value):
        raise doc.error(("console",), f"{value!r} is not a console such as ttyS0,115200")
    return value


def _uboot(doc: loader.Document, data: dict[str, Any]) -> UBootConfig:
    config = _opt_path(doc, ("u_boot", "config"), data["config"])
    env_file = data["env_file"]
    if names.problem(env_file) is not None:
        raise doc.error(("u_boot", "env_file"), f"{env_file!r} is not a file name")
    return UBootConfig(config, data["env"], env_file)


def qemu_board(arches: tuple[str, ...]) -> Board:
    """The default board when a project has no ``recipes/boards/qemu.yaml``: qemu's machines."""
    return Board(DEFAULT_BOARD, None, arches, description="qemu's virtual machines")
