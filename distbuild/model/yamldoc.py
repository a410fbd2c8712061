"""Definition YAML as plain data, with the line of every key.

Only the core schema's tags are read (strings, numbers, booleans, null,
lists, mappings); implicit dates stay strings; any other tag, a merge key, a
recursive anchor, nesting deeper than :data:`MAX_DEPTH` or more than
:data:`MAX_NODES` nodes after expanding aliases (a "billion laughs") is a
:class:`RecipeError` naming the file and line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from distbuild.core.errors import RecipeError

try:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    _FAST = True
except ImportError:  # PyYAML built without libyaml
    _FAST = False

KeyPath = tuple[str | int, ...]

MAX_DEPTH = 64
MAX_NODES = 20_000  # nodes built for one file, counting every alias expansion
MAX_NUMBER = 64  # characters of an integer literal (sexagesimal ints are quadratic)
_CORE = "tag:yaml.org,2002:"
CORE_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
MERGE_TAG = _CORE + "merge"
TAG_HINT = (
    "definitions are plain data: strings, numbers, true/false, null, lists and mappings;"
    " remove the tag (quote the value if it is a string)"
)


class Refused(Exception):
    """A YAML construct definitions do not allow, at a mark."""

    def __init__(self, message: str, hint: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.message, self.hint, self.mark = message, hint, mark


def _short(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


class _Composer(Composer, SafeConstructor, Resolver):
    """PyYAML's composer, stopping at :data:`MAX_DEPTH` levels of nesting.

    Timestamps and ``=`` are not resolved implicitly: outside the core schema,
    they stay the strings they look like.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML reads it as a class attribute)
        first: [
            (tag, rx) for tag, rx in resolvers if tag not in (_CORE + "timestamp", _CORE + "value")
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    depth = 0

    def dispose(self) -> None:
        """Overridden by the parser (which frees its state)."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                raise Refused(
                    f"nested deeper than {MAX_DEPTH} levels",
                    "flatten the data; definitions never need this depth",
                    mark,
                )
            node = super().compose_node(parent, index)
            assert node is not None
            return node
        finally:
            self.depth -= 1


def _loader(text: str) -> _Composer:
    """A loader over ``text``: libyaml's parser if PyYAML has it (4x faster), else Python's."""
    if _FAST:
        return _FastLoader(text)
    return _PureLoader(text)


class _PureLoader(Reader, Scanner, Parser, _Composer):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


if _FAST:

    class _FastLoader(CParser, _Composer):
        # CParser composes in C, without a depth cap: use the Python composer over its events.
        get_single_node = Composer.get_single_node
        check_node = Composer.check_node
        get_node = Composer.get_node

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


class _Builder:
    """Plain data from a node graph, expanding aliases within the caps."""

    def __init__(self, loader: _Composer, file: str) -> None:
        self.loader = loader
        self.file = file
        self.nodes = 0
        self.open: set[int] = set()  # the mappings and lists being built (to see cycles)
        self.origin: dict[KeyPath, str] = {}

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Refused(
                f"more than {MAX_NODES} values after expanding aliases",
                "this looks like an alias bomb; write the data out, or split it with include:",
                node.start_mark,
            )
        if len(path) > MAX_DEPTH:
            raise Refused(
                f"nested deeper than {MAX_DEPTH} levels (counting aliases)",
                "flatten the data; definitions never need this depth",
                node.start_mark,
            )
        if id(node) in self.open:
            raise Refused(
                "an alias refers to a mapping or list that contains it",
                "a recursive anchor never ends; refer to an anchor only after its value",
                node.start_mark,
            )
        if node.tag not in CORE_TAGS:
            raise Refused(f"the tag {_short(node.tag)} is not allowed", TAG_HINT, node.start_mark)
        self.origin[path] = f"{self.file}:{node.start_mark.line + 1}"
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(v, (*path, i)) for i, v in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, path)
        finally:
            self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            if key in out:
                raise RecipeError(
                    f"duplicate key {key!r}",
                    hint="each key may appear once in a mapping",
                    where=self.where(key_node.start_mark),
                    key=dotted((*path, key)),
                )
            out[key] = self.build(value_node, (*path, key))
        return out

    def key(self, node: yaml.Node) -> str:
        if node.tag == MERGE_TAG:
            raise Refused(
                "merge keys (<<) are not supported",
                "write the keys out, or share them with include:",
                node.start_mark,
            )
        if not isinstance(node, yaml.ScalarNode) or node.tag not in CORE_TAGS:
            raise Refused(
                "keys must be plain strings", "write the key as a string", node.start_mark
            )
        # The key as written: `on:` stays "on", `0644:` stays "0644".
        return _text(node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _CORE + "int" and len(node.value) > MAX_NUMBER:
            raise Refused(
                f"a number of more than {MAX_NUMBER} characters",
                "quote it if it is meant as a string",
                node.start_mark,
            )
        _text(node)
        try:
            return self.loader.yaml_constructors[node.tag](self.loader, node)
        except (ValueError, KeyError, TypeError, OverflowError, yaml.YAMLError):
            raise Refused(
                f"cannot read {node.value[:40]!r} as {_short(node.tag)}",
                "write a value of that type, or drop the tag",
                node.start_mark,
            ) from None

    def where(self, mark: yaml.Mark | None) -> str:
        return f"{self.file}:{mark.line + 1}" if mark else self.file


def _text(node: yaml.ScalarNode) -> str:
    """A scalar's text, which must be encodable (no lone surrogates) and hold no NUL."""
    value = str(node.value)
    if "\0" in value:
        raise Refused(
            "a NUL character (\\0)", "no path, name or file content may hold one", node.start_mark
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(
            "a character that is not valid Unicode (a lone surrogate escape?)",
            "write the text in UTF-8 without \\ud800-\\udfff escapes",
            node.start_mark,
        ) from None
    return value


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def read(text: str, file: str) -> tuple[Any, dict[KeyPath, str]]:
    """Parse one YAML document into plain data and the ``file:line`` of every key path."""
    loader: _Composer | None = None
    try:
        loader = _loader(text)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            raise RecipeError("the file is empty", hint="write key: value lines", where=file)
        builder = _Builder(loader, file)
        return builder.build(node, ()), builder.origin
    except Refused as e:
        where = f"{file}:{e.mark.line + 1}" if e.mark else file
        raise RecipeError(e.message, hint=e.hint, where=where) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if "nesting depth" in str(e.problem):  # libyaml's own cap, met scanning ahead
            raise RecipeError(
                f"nested deeper than {MAX_DEPTH} levels",
                hint="flatten the data; definitions never need this depth",
                where=f"{file}:{mark.line + 1}" if mark else file,
            ) from None
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(
            f"invalid YAML: {e.problem or e}",
            hint="check indentation and quoting on that line",
            where=f"{file}{line}",
        ) from None
    except yaml.YAMLError as e:
        raise RecipeError(
            f"invalid YAML: {e}", hint="definitions are UTF-8 text", where=file
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
