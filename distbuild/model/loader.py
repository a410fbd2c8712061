"""YAML + Jinja2 loading that remembers where every key came from.

A definition file is first rendered with Jinja2 (the arch in scope), then
parsed as YAML with line marks, then merged over its ``include:`` files. The
result is plain data plus a map from key path to ``file:line`` so that schema
errors can point at the offending line.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from distbuild.errors import RecipeError

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass
class Document:
    """Plain data from one or more YAML files and the origin of each key."""

    data: dict[str, Any]
    origin: dict[KeyPath, str] = field(default_factory=dict)
    file: str = ""

    def where(self, path: KeyPath) -> str:
        # The closest known ancestor: a missing key is reported at its parent.
        for n in range(len(path), -1, -1):
            if path[:n] in self.origin:
                return self.origin[path[:n]]
        return self.file

    def error(self, path: KeyPath, message: str, hint: str | None = None) -> RecipeError:
        hint = hint or "fix that line, then run 'distbuild recipes check'"
        return RecipeError(message, hint, where=self.where(path), key=dotted(path) or None)


def _template_line(exc: BaseException, name: str) -> int | None:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == name or frame.filename.endswith(name):
            return frame.lineno
    return None


def render(path: Path, context: dict[str, Any]) -> str:
    """Render a definition file with Jinja2; errors carry file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"file not found: {path}", hint="check the name and --project") from None
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        loader=jinja2.FileSystemLoader(str(path.parent)),
        autoescape=False,
    )
    try:
        template = env.from_string(text)
        template.filename = str(path)
        return template.render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(
            f"template syntax error: {e.message}",
            hint="check the {{ }} and {% %} blocks on that line",
            where=f"{path}:{e.lineno}",
        ) from None
    except jinja2.UndefinedError as e:
        line = _template_line(e, str(path))
        names = ", ".join(sorted(context))
        raise RecipeError(
            f"template error: {e.message}",
            hint=f"variables in scope: {names}",
            where=f"{path}:{line}" if line else str(path),
        ) from None
    except jinja2.TemplateError as e:
        raise RecipeError(f"template error: {e}", where=str(path)) from None


def _construct(node: yaml.Node, path: KeyPath, origin: dict[KeyPath, str], file: str) -> Any:
    origin[path] = f"{file}:{node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError(
                    "keys must be plain strings", where=f"{file}:{key_node.start_mark.line + 1}"
                )
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            if key in out:
                raise RecipeError(
                    f"duplicate key {key!r}",
                    hint="each key may appear once in a mapping",
                    where=f"{file}:{key_node.start_mark.line + 1}",
                    key=dotted((*path, key)),
                )
            out[key] = _construct(value_node, (*path, key), origin, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*path, i), origin, file) for i, v in enumerate(node.value)]
    # Scalars: let PyYAML's safe resolver pick the type.
    return yaml.safe_load(yaml.serialize(node))


def parse(text: str, file: str) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(
            f"invalid YAML: {e.problem or e}",
            hint="check indentation and quoting on that line",
            where=f"{file}{line}",
        ) from None
    except yaml.YAMLError as e:
        raise RecipeError(f"invalid YAML: {e}", where=file) from None
    if node is None:
        raise RecipeError("the file is empty", where=file)
    origin: dict[KeyPath, str] = {}
    data = _construct(node, (), origin, file)
    if not isinstance(data, dict):
        raise RecipeError("the top level must be a mapping", where=f"{file}:1")
    return Document(data, origin, file)


def merge(base: Document, over: Document) -> Document:
    """Merge ``over`` into ``base``: mappings deeply, lists appended, scalars replaced."""
    origin = dict(base.origin)

    def walk(a: Any, b: Any, path: KeyPath) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = walk(a[k], v, (*path, k)) if k in a else _take(v, (*path, k))
            return out
        if isinstance(a, list) and isinstance(b, list):
            offset = len(a)
            for key, where in over.origin.items():
                if key[: len(path)] == path and len(key) > len(path):
                    idx = key[len(path)]
                    if isinstance(idx, int):
                        origin[(*path, idx + offset, *key[len(path) + 1 :])] = where
            return a + b
        return _take(b, path)

    def _take(v: Any, path: KeyPath) -> Any:
        for key, where in over.origin.items():
            if key[: len(path)] == path:
                origin[key] = where
        return v

    data = walk(base.data, over.data, ())
    return Document(data, origin, over.file)


def load(path: Path, context: dict[str, Any], _seen: tuple[Path, ...] = ()) -> Document:
    """Render, parse and resolve ``include:`` of one definition file."""
    path = path.resolve()
    if path in _seen:
        raise RecipeError(f"include loop through {path}", where=str(_seen[-1]))
    doc = parse(render(path, context), str(path))
    includes = doc.data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise doc.error(("include",), "must be a file name or a list of file names")
    result: Document | None = None
    for i, name in enumerate(includes):
        target = path.parent / name
        if not target.is_file():
            raise doc.error(("include", i), f"included file not found: {name}")
        sub = load(target, context, (*_seen, path))
        result = sub if result is None else merge(result, sub)
    return doc if result is None else merge(result, doc)
