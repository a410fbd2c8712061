"""The CLI's vocabulary: the shared options and the types of names and numbers.

Every command takes names (images, versions, arches, channels) and numbers
(ports, counts, timestamps) through these types, so a flag is checked once,
by the grammar of :mod:`distbuild.core.names`, before any command acts on it.
One flag name has one meaning in every command: ``--arch`` is always
:func:`arch_option`, ``--json`` always :data:`json_option` (printed by
:func:`print_json`), ``--release`` the release version (``--version`` is the
program's), and every count is a :class:`click.IntRange`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from distbuild.core import names
from distbuild.core.arch import ARCHES as ARCH_TABLE
from distbuild.core.errors import UsageError

# Ports we listen on; 0: the kernel picks one. (Ports in registry references:
# distbuild.oci.reference, 1 to 65535.)
LISTEN_PORT = click.IntRange(0, 65535)
# Seconds since 1970 that tar, squashfs and FAT timestamps all hold (until 2106).
EPOCH = click.IntRange(0, 2**32 - 1)
# Boot tries: the most any boot loader counts (systemd-boot: 99, U-Boot less).
TRIES = click.IntRange(1, 99)
# Guest memory in MiB.
MEMORY = click.IntRange(64, 1 << 20)
# Keys per role, signatures per role.
MAX_KEYS = 64
COUNT = click.IntRange(1, MAX_KEYS)


class _Seconds(click.FloatRange):
    """A timeout: more than nothing, at most a week, and a number (not NaN)."""

    def __init__(self) -> None:
        super().__init__(0, 7 * 86400, min_open=True)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        seconds = float(super().convert(value, param, ctx))
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


SECONDS = _Seconds()


class Name(click.ParamType[str]):
    """A name of one kind (e.g. ``names.VERSION``), refused with error/hint if invalid."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.name = what.split()[0]

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        return names.check_name(value, self.what, error=UsageError, where=_flag(param))


IMAGE = Name(names.IMAGE)
VERSION = Name(names.VERSION)
CHANNEL = Name(names.CHANNEL)
BOARD = Name(names.BOARD)


class Arch(Name):
    """An arch of the table (or ``all``, where allowed); with ``several``, a comma list."""

    def __init__(self, allow_all: bool, several: bool) -> None:
        super().__init__(names.ARCH)
        self.allow_all = allow_all
        self.several = several

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        if not isinstance(value, str):
            return super().convert(value, param, ctx)  # refused: not a string
        if not self.several and "," in value:
            raise UsageError(
                f"{_flag(param)}: one architecture here, not a list ({value[:80]!r})",
                hint=f"choose one of: {self.choices()}",
            )
        items = [i.strip() for i in value.split(",")] if self.several else [value]
        for item in filter(None, items):
            super().convert(item, param, ctx)
            if item not in ARCH_TABLE and not (self.allow_all and item == "all"):
                raise UsageError(
                    f"{_flag(param)}: unknown architecture {item!r}",
                    hint=f"choose one of: {self.choices()}",
                )
        return value

    def choices(self) -> str:
        return ", ".join(ARCH_TABLE) + (" or all" if self.allow_all else "")


class ArchOption(click.Option):
    """The one ``--arch`` option: every command taking an arch uses it (see the vocabulary test)."""


class JsonOption(click.Option):
    """The one ``--json`` option: the command's result as one JSON document on stdout."""


_F = TypeVar("_F", bound=Callable[..., Any])


def arch_option(
    *, multiple: bool = False, allow_all: bool = False, required: bool = False, help: str = ""
) -> Callable[[_F], _F]:
    """``--arch``: one arch (parameter ``arch``) or, ``multiple``, repeatable comma lists
    (parameter ``arches``, a tuple of strings for :func:`distbuild.core.arch.parse_arches`)."""
    kind = Arch(allow_all, several=multiple)
    several = "; a comma list, or repeat the option" if multiple else ""
    return click.option(
        "--arch",
        "arches" if multiple else "arch",
        cls=ArchOption,
        type=kind,
        multiple=multiple,
        required=required,
        help=help or f"{kind.choices()}{several}.",
    )


json_option = click.option(
    "--json", "as_json", is_flag=True, cls=JsonOption, help="Print the result as JSON."
)


def print_json(data: Any) -> None:
    """The one way a command prints JSON: one document, sorted keys, on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))


class RoleCount(click.ParamType[tuple[str, int]]):
    """``ROLE=N``: a number of signatures a role needs (1 to :data:`MAX_KEYS`)."""

    name = "role=n"

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.roles = roles

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        role, sep, number = str(value).partition("=")
        digits = number.isascii() and number.isdigit() and len(number) <= 3
        if not sep or role not in self.roles or not digits or not 1 <= int(number) <= MAX_KEYS:
            raise UsageError(
                f"invalid {_flag(param)} {str(value)[:80]!r}",
                hint=f"write ROLE=N with ROLE one of {', '.join(self.roles)} and N from 1 to "
                f"{MAX_KEYS}, e.g. root=2",
            )
        return role, int(number)


def check_argv(argv: list[str]) -> None:
    """Refuse a NUL anywhere on the command line: no path or name may hold one."""
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise UsageError(
                f"argument {i + 1} ({arg!r:.80}) holds a NUL byte",
                hint="paths and names never hold NUL; check how the command line is built",
            )


def _flag(param: click.Parameter | None) -> str | None:
    if param is None:
        return None
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    return (param.name or "").upper() or None
