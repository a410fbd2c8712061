"""A bounded block-YAML subset for provisioning files (the node has no PyYAML).

``update.yaml`` needs only top-level ``key: value`` lines
(:func:`distbuild.node.config.parse_document`); a cloud-init file needs
nesting. This reader takes what those files are written with, and reads it
as any YAML parser would:

* block mappings (``key: value``, ``key:`` + an indented block) and block
  sequences (``- item``, ``- key: value`` starting a mapping), indented with
  spaces;
* literal block scalars ``|``, ``|-``, ``|+`` (file contents, keys);
* the scalars and flow lists of :func:`distbuild.node.config.parse_scalar`;
* or the whole document as JSON.

Anything else (flow mappings, anchors, aliases, tags, folded ``>`` scalars,
tabs in indentation, several documents) is refused with the line, never
guessed at. The input is bounded before it is read (:data:`MAX_BYTES`,
:data:`MAX_DEPTH`, :data:`MAX_ITEMS`), so a hostile file costs little.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from distbuild.core.errors import DistbuildError
from distbuild.node.config import _split_items, _strip_comment, parse_scalar

MAX_BYTES = 256 * 1024
MAX_DEPTH = 8
MAX_ITEMS = 4096  # keys and list items in all

_AMBIGUOUS = ("yes", "no", "on", "off", "y", "n")
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class YamlError(DistbuildError):
    """A provisioning document is not in the supported YAML subset."""

    exit_code = 3


@dataclass
class _Line:
    number: int
    indent: int
    text: str  # without indentation and comment, right-stripped


class _Reader:
    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.raw = text.splitlines()
        self.items = 0

    def fail(self, number: int, message: str, hint: str | None = None) -> YamlError:
        return YamlError(f"{self.where}:{number}: {message}", hint=hint)

    def line(self, i: int) -> _Line | None:
        """Line ``i`` as structure, or None if it is blank or only a comment."""
        raw = self.raw[i]
        body = _strip_comment(raw).rstrip()
        stripped = body.lstrip(" ")
        if not stripped:
            return None
        if stripped[0] == "\t" or "\t" in body[: len(body) - len(stripped)]:
            raise self.fail(i + 1, "a tab in the indentation", hint="indent with spaces")
        return _Line(i + 1, len(body) - len(stripped), stripped)

    def next_line(self, i: int) -> tuple[int, _Line | None]:
        """The first structural line at or after ``i``."""
        while i < len(self.raw):
            found = self.line(i)
            if found is not None:
                return i, found
            i += 1
        return i, None

    def count(self, number: int) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise self.fail(number, f"more than {MAX_ITEMS} keys and items")

    def block(self, i: int, indent: int, depth: int) -> tuple[object, int]:
        """The block (mapping or sequence) whose lines start at column ``indent``."""
        i, first = self.next_line(i)
        if first is None:
            return None, i
        if depth > MAX_DEPTH:
            raise self.fail(first.number, f"nested deeper than {MAX_DEPTH} levels")
        if first.text == "-" or first.text.startswith("- "):
            return self.sequence(i, first.indent, depth)
        return self.mapping(i, first.indent, depth, None)

    def sequence(self, i: int, indent: int, depth: int) -> tuple[list[object], int]:
        out: list[object] = []
        while True:
            i, line = self.next_line(i)
            is_item = line is not None and (line.text == "-" or line.text.startswith("- "))
            if line is None or line.indent < indent or (line.indent == indent and not is_item):
                return out, i
            if line.indent > indent:
                raise self.fail(line.number, f"expected '- item' at column {indent + 1}")
            self.count(line.number)
            rest = line.text[1:].lstrip(" ")
            if not rest:
                value, i = self.nested(i + 1, indent, depth, allow_same=False)
            elif _is_pair(rest):
                inner = indent + (len(line.text) - len(rest))
                first = _Line(line.number, inner, rest)
                value, i = self.mapping(i, inner, depth + 1, first)
            else:
                value = self.scalar(line.number, rest)
                i += 1
            out.append(value)

    def mapping(
        self, i: int, indent: int, depth: int, first: _Line | None
    ) -> tuple[dict[str, object], int]:
        out: dict[str, object] = {}
        while True:
            if first is not None:
                line: _Line | None = first
                first = None
            else:
                i, line = self.next_line(i)
            if line is None or line.indent < indent:
                return out, i
            if line.indent > indent:
                raise self.fail(line.number, "unexpected indentation")
            key, value_text = self.pair(line)
            if key in out:
                raise self.fail(line.number, f"{key} is given twice")
            self.count(line.number)
            if not value_text:
                out[key], i = self.nested(i + 1, indent, depth, allow_same=True)
            elif value_text[0] in "|>":
                out[key], i = self.literal(i + 1, indent, line.number, value_text)
            else:
                out[key] = self.scalar(line.number, value_text)
                i += 1

    def pair(self, line: _Line) -> tuple[str, str]:
        key, sep, value = line.text.partition(":")
        if key[:1] in "'\"":
            raise self.fail(line.number, "quoted keys are not supported")
        if not sep or not _KEY.fullmatch(key) or (value and not value[0].isspace()):
            raise self.fail(line.number, f"expected 'key: value', got {line.text!r}")
        return key, value.strip()

    def nested(self, i: int, indent: int, depth: int, *, allow_same: bool) -> tuple[object, int]:
        """The value of ``key:`` or ``-`` with nothing after it: an indented block or null.

        A sequence may sit at its key's own column (``key:`` then ``- a``)."""
        j, line = self.next_line(i)
        if line is None:
            return None, j
        if line.indent > indent:
            return self.block(j, line.indent, depth + 1)
        is_item = line.text == "-" or line.text.startswith("- ")
        if allow_same and line.indent == indent and is_item:
            return self.sequence(j, indent, depth + 1)
        return None, i

    def literal(self, i: int, indent: int, number: int, header: str) -> tuple[str, int]:
        """A ``|`` block scalar: the lines indented deeper than its key."""
        if header not in ("|", "|-", "|+"):
            raise self.fail(
                number, f"block scalar {header!r} is not supported", hint="use | (literal)"
            )
        lines: list[str] = []
        column = -1
        while i < len(self.raw):
            raw = self.raw[i]
            if raw.strip(" ") == "":
                lines.append("")
                i += 1
                continue
            here = len(raw) - len(raw.lstrip(" "))
            if column < 0:
                if here <= indent:
                    break
                column = here
            if here < column:
                if here > indent:
                    raise self.fail(i + 1, "a line of a | block is indented less than its first")
                break
            lines.append(raw[column:])
            i += 1
        return _chomp(lines, header), i

    def scalar(self, number: int, text: str) -> object:
        if text == "-" or text.startswith("- "):
            raise self.fail(number, "a list inside a list item on one line is not supported")
        if _ambiguous(text):
            raise self.fail(
                number,
                f"{text!r} is a boolean to YAML 1.1 and a string to YAML 1.2",
                hint="write true or false, or quote it",
            )
        if text[0] not in "'\"[{&*!|>@`%" and re.search(r":\s", text + " "):
            raise self.fail(number, f"a plain value must not contain ': ' (quote it): {text!r}")
        try:
            return parse_scalar(text)
        except ValueError as e:
            raise self.fail(number, str(e)) from None


def _ambiguous(text: str) -> bool:
    """A plain yes/no/on/off (alone or in a flow list): YAML versions disagree on it."""
    if text.startswith("[") and text.endswith("]") and text[1:-1].strip():
        try:
            items = _split_items(text[1:-1].strip())
        except ValueError:
            return False  # parse_scalar says what is wrong
        return any(item.lower() in _AMBIGUOUS for item in items)
    return text.lower() in _AMBIGUOUS


def _is_pair(text: str) -> bool:
    key, sep, value = text.partition(":")
    return bool(sep) and _KEY.fullmatch(key) is not None and (not value or value[0] == " ")


def _chomp(lines: list[str], header: str) -> str:
    while header != "|+" and lines and lines[-1] == "":
        lines.pop()
    text = "\n".join(lines)
    if header == "|-" or not lines:
        return text
    return text + "\n"


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def load(data: bytes, where: str) -> object:
    """Parse a provisioning document (YAML subset or JSON), bounded."""
    if len(data) > MAX_BYTES:
        raise YamlError(
            f"{where} is {len(data)} bytes, more than the {MAX_BYTES} allowed",
            hint="a provisioning file holds settings and small files, not payloads",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{where}: not UTF-8 (byte {e.start})") from None
    if "\0" in text:
        raise YamlError(f"{where}: contains a NUL byte")
    text = text.removeprefix("\ufeff")
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise YamlError(
                f"{where}: invalid JSON: {getattr(e, 'msg', 'nested too deeply')}"
            ) from None
        if _depth(value) > MAX_DEPTH + 1:
            raise YamlError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        return value
    reader = _Reader(text, where)
    for number, raw in enumerate(reader.raw, start=1):
        if raw.rstrip() in ("---", "...") and number > 1:
            raise reader.fail(number, "several YAML documents in one file")
    start = 1 if reader.raw and reader.raw[0].rstrip() == "---" else 0
    value, end = reader.block(start, 0, 0)
    _, rest = reader.next_line(end)
    if rest is not None:
        raise reader.fail(rest.number, "unexpected indentation or text after the document")
    return value
