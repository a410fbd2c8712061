"""The one grammar of names: images, versions, arches, channels, boards, target files.

A name becomes a path component (``OUT/<image>/<version>``,
``<image>/<version>/<arch>/<file>`` targets, ``channels/<name>.yaml``), a tag
or a log line, and it may come from a flag, a build record or a server, so
every door checks it against :data:`NAME`: 1 to 128 ASCII letters, digits and
``._+~-``, starting with a letter or digit, never ``..`` (so never ``.``,
``..``, ``/``, a NUL, a newline or a look-alike from another script). Bad
names are refused, never rewritten.

This module uses only the standard library: the node updater imports it.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from distbuild.core.errors import DistbuildError, UsageError

MAX_LENGTH = 128
NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+~-]{0,127}", re.ASCII)
GRAMMAR = (
    "1 to 128 ASCII letters, digits and '._+~-', starting with a letter or digit, without '..'"
)

# What each kind of name is called in messages.
IMAGE = "image name"
VERSION = "version"
ARCH = "architecture"
CHANNEL = "channel name"
BOARD = "board"
KIND = "artifact kind"
FILE = "file name"


# A kernel console: a device and its options, as boards name them (ttyS0,115200n8).
_CONSOLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}(?:,[A-Za-z0-9]{1,16})?", re.ASCII)


def is_console(value: str) -> bool:
    """True if ``value`` is a kernel console (``ttyS0``, ``ttyS0,115200``): safe on a
    kernel command line, in a U-Boot env file or a script."""
    return _CONSOLE.fullmatch(value) is not None


# A kernel command-line word a board adds (maxcpus=1, cma=64M, clk_ignore_unused):
# one word, nothing a shell, U-Boot's env or the kernel's parser reads specially.
_KERNEL_ARG = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}(?:=[A-Za-z0-9_.,:/-]{1,64})?", re.ASCII)


def is_kernel_arg(value: str) -> bool:
    """True if ``value`` is one plain kernel argument (``maxcpus=1``, ``quiet``)."""
    return _KERNEL_ARG.fullmatch(value) is not None


def problem(value: object) -> str | None:
    """Why ``value`` is not a name, or None if it is one."""
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not a string"
    if not value:
        return "it is empty"
    if len(value) > MAX_LENGTH:
        return f"it is {len(value)} characters long (at most {MAX_LENGTH})"
    for char in value:
        if char == "\0":
            return "it holds a NUL byte"
        if char == "/":
            return "it holds '/'"
        if not char.isascii():
            return f"it holds the non-ASCII character U+{ord(char):04X}"
        if not char.isprintable() or char.isspace():
            return f"it holds the control or space character {char!r}"
    if ".." in value:
        return "it holds '..'"
    if not value[0].isalnum():
        return f"it starts with {value[0]!r}, not a letter or digit"
    if NAME.fullmatch(value) is None:
        bad = sorted({c for c in value if not (c.isalnum() or c in "._+~-")})
        return f"it holds {', '.join(repr(c) for c in bad)}"
    return None


def check_name(
    value: object,
    what: str,
    *,
    error: type[DistbuildError] = UsageError,
    where: str | None = None,
    hint: str | None = None,
) -> str:
    """``value`` if it is a valid ``what`` (e.g. :data:`VERSION`), else ``error``.

    ``where`` (a file, a flag) starts the message; the default hint states the grammar.
    """
    reason = problem(value)
    if reason is None:
        assert isinstance(value, str)
        return value
    prefix = f"{where}: " if where else ""
    raise error(
        f"{prefix}invalid {what} {_shown(value)}: {reason}",
        hint=hint or f"{_article(what)} {what} is {GRAMMAR}",
    )


def check_target_path(
    value: object, *, error: type[DistbuildError] = DistbuildError, where: str | None = None
) -> str:
    """A TUF target name: names joined by single ``/``, e.g. ``node/1.0/amd64/root.img``."""
    if not isinstance(value, str) or not value:
        raise error(
            f"{where + ': ' if where else ''}invalid target name {_shown(value)}",
            hint=f"a target name is '/'-separated parts, each {GRAMMAR}",
        )
    for part in value.split("/"):
        check_name(
            part,
            FILE,
            error=error,
            where=where,
            hint=f"target {_shown(value)}: each '/'-separated part is {GRAMMAR}",
        )
    return value


def check_relative_path(
    value: object,
    base: Path,
    *,
    what: str = "path",
    error: type[DistbuildError] = DistbuildError,
    where: str | None = None,
) -> Path:
    """``base / value`` for a relative path that stays inside ``base`` once resolved.

    Refuses non-strings, empty, absolute paths, NUL bytes, ``..`` components and
    paths whose symlinks lead out of ``base``.
    """
    prefix = f"{where}: " if where else ""
    hint = f"{_article(what)} {what} is relative to the directory of the file naming it and stays inside it"
    if not isinstance(value, str) or not value:
        raise error(f"{prefix}invalid {what} {_shown(value)}: not a non-empty string", hint=hint)
    pure = PurePosixPath(value)
    if "\0" in value:
        reason = "it holds a NUL byte"
    elif pure.is_absolute():
        reason = "it is absolute"
    elif ".." in pure.parts:
        reason = "it holds '..'"
    else:
        root = base.resolve()
        try:
            full = (root / pure).resolve()
        except (OSError, RuntimeError):  # a symlink loop
            full = root
        if full == root or not full.is_relative_to(root):
            reason = f"it leads out of {root}"
        else:
            return root / pure
    raise error(f"{prefix}invalid {what} {_shown(value)}: {reason}", hint=hint)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _shown(value: object) -> str:
    """``value`` for a message: repr (escapes NUL, newlines), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
