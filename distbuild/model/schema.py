"""A small schema checker for definition files.

Specs are nested dicts of :class:`Field`; checking returns plain data with
defaults filled in, and every error names the file, line and key path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distbuild.model.loader import Document, KeyPath

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
}


@dataclass(frozen=True)
class Field:
    kind: Any  # str, int, bool, "str-list", "str-map", "any-map", or a nested spec dict
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    range: tuple[int, int] | None = None  # inclusive bounds of an int


UID_RANGE = (0, 2**32 - 2)  # 2**32 - 1 is (uid_t)-1, "no change" to chown


Spec = dict[str, Field]

_OCTAL_MODE = re.compile(r"^(?:0o?)?([0-7]{1,4})$")


def refuse_numeric_mode(doc: Document, at: KeyPath, spec: Any) -> None:
    """Refuse ``mode: 0755`` unquoted, before :func:`check`: YAML reads it as a number."""
    mode = spec.get("mode") if isinstance(spec, dict) else None
    if isinstance(mode, int | float) and not isinstance(mode, bool):
        raise doc.error(
            (*at, "mode"),
            "a mode must be a quoted octal string",
            hint='YAML reads 0755 as a number in another base; write mode: "0755"',
        )


def octal_mode(doc: Document, at: KeyPath, text: str, example: str) -> int:
    """The checked ``mode:`` string of the entry at ``at`` ("0755", "755", "0o755") as a number."""
    m = _OCTAL_MODE.match(text)
    if not m:
        raise doc.error(
            (*at, "mode"),
            f"{text!r} is not an octal mode from 0000 to 7777",
            hint=f'write e.g. mode: "{example}"',
        )
    return int(m.group(1), 8)


def check(doc: Document, spec: Spec, data: Any = None, path: KeyPath = ()) -> dict[str, Any]:
    data = doc.data if data is None else data
    if not isinstance(data, dict):
        raise doc.error(path, f"must be a mapping, not {_describe(data)}")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise doc.error(
            (*path, unknown[0]),
            f"unknown key {unknown[0]!r}",
            hint=f"known keys here: {', '.join(sorted(spec))}",
        )
    out: dict[str, Any] = {}
    for name, f in spec.items():
        p = (*path, name)
        if name not in data or data[name] is None:
            if f.required:
                raise doc.error(p, "required key is missing", hint=f.doc or None)
            out[name] = _default(f)
            continue
        out[name] = _value(doc, f, data[name], p)
    return out


def _default(f: Field) -> Any:
    if isinstance(f.kind, dict):
        return {k: _default(v) for k, v in f.kind.items()}
    if f.default is not None:
        return f.default
    if f.kind == "str-list":
        return []
    if f.kind in ("str-map", "any-map"):
        return {}
    return None


def _describe(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__) + f" ({value!r})"[:60]


def _value(doc: Document, f: Field, value: Any, path: KeyPath) -> Any:
    if isinstance(f.kind, dict):
        return check(doc, f.kind, value, path)
    if isinstance(f.kind, str):
        return _COMPOUND[f.kind](doc, value, path)
    value = _scalar(doc, f, value, path)
    if f.choices is not None and value not in f.choices:
        raise doc.error(
            path,
            f"{value!r} is not one of {', '.join(map(str, f.choices))}",
            hint=f.doc or None,
        )
    return value


def _str_list(doc: Document, value: Any, path: KeyPath) -> list[str]:
    """A list of strings (numbers read as strings); one string is a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise doc.error(path, f"must be a list of strings, not {_describe(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise doc.error((*path, i), f"must be a string, not {_describe(item)}")
    return [str(v) for v in value]


def _str_map(doc: Document, value: Any, path: KeyPath) -> dict[str, str]:
    for k, v in _any_map(doc, value, path).items():
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise doc.error((*path, k), f"must be a string, not {_describe(v)}")
    return {str(k): str(v) for k, v in value.items()}


def _any_map(doc: Document, value: Any, path: KeyPath) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, f"must be a mapping, not {_describe(value)}")
    return value


_COMPOUND: dict[str, Callable[[Document, Any, KeyPath], Any]] = {
    "str-list": _str_list,
    "str-map": _str_map,
    "any-map": _any_map,
}


def _scalar(doc: Document, f: Field, value: Any, path: KeyPath) -> Any:
    """An int (in its range), a bool, a string (numbers read as strings) or a list."""
    kind = f.kind
    if kind is int:
        _check_int(doc, f, value, path)
    elif kind is bool and not isinstance(value, bool):
        raise doc.error(path, f"must be true or false, not {_describe(value)}")
    elif kind is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise doc.error(path, f"must be a string, not {_describe(value)}")
        value = str(value)
    elif kind is list and not isinstance(value, list):
        raise doc.error(path, f"must be a list, not {_describe(value)}")
    return value


def _check_int(doc: Document, f: Field, value: Any, path: KeyPath) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise doc.error(
            path,
            f"must be an integer, not {_describe(value)}",
            hint=f"write a number, e.g. {path[-1]}: 3",
        )
    if f.range is not None and not f.range[0] <= value <= f.range[1]:
        raise doc.error(
            path,
            f"{value} is out of range ({f.range[0]} to {f.range[1]})",
            hint=f.doc or f"write a number from {f.range[0]} to {f.range[1]}",
        )
