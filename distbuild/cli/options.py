"""The CLI's vocabulary: parameter types for names and bounded numbers.

Every command takes names (images, versions, arches, channels) and numbers
(ports, counts, timestamps) through these types, so a flag is checked once,
by the grammar of :mod:`distbuild.core.names`, before any command acts on it.
"""

from __future__ import annotations

import math
from typing import Any

import click

from distbuild.core import names
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


class NameList(Name):
    """Names separated by commas (``--arch armv7,arm64``); the list stays a string."""

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        if not isinstance(value, str):
            return super().convert(value, param, ctx)  # refused: not a string
        for item in value.split(","):
            if item.strip():
                names.check_name(item.strip(), self.what, error=UsageError, where=_flag(param))
        return value


IMAGE = Name(names.IMAGE)
VERSION = Name(names.VERSION)
ARCH = Name(names.ARCH)
ARCHES = NameList(names.ARCH)
CHANNEL = Name(names.CHANNEL)


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
