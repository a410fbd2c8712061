"""YAML + Jinja2 loading that remembers where every key came from.

A definition file is first rendered with Jinja2 in a sandbox (the arch in
scope; see :mod:`distbuild.model.template`), then parsed as safe YAML with
line marks (:mod:`distbuild.model.yamldoc`), then merged over its
``include:`` files, which must lie inside the project (:mod:`.boundary`). The
result is plain data plus a map from key path to ``file:line`` so that schema
errors can point at the offending line.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from distbuild.core.errors import RecipeError
from distbuild.model import template, yamldoc
from distbuild.model.boundary import OUTSIDE_HINT, Boundary
from distbuild.model.yamldoc import KeyPath, dotted

__all__ = ["Document", "KeyPath", "dotted", "load", "merge", "parse", "render"]

MAX_INCLUDES = 64  # files one definition pulls in, itself and every level of include: together
MAX_VALUES = 2 * yamldoc.MAX_NODES  # values in all those files together


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


def _template_line(exc: BaseException, names: set[str]) -> str | None:
    """The ``file:line`` of the innermost template frame in ``exc``'s traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename in names:
            return f"{frame.filename}:{frame.lineno}"
    return None


def render(path: Path, context: dict[str, Any], boundary: Boundary) -> str:
    """Render a definition file with Jinja2 in the sandbox; errors carry file and line."""
    try:
        text = template.read_source(path)
    except FileNotFoundError:
        raise RecipeError(f"file not found: {path}", hint="check the name and --project") from None
    except (OSError, template.TemplateLimit) as e:
        raise RecipeError(
            f"cannot read {path}: {e}", hint="definitions are small text files"
        ) from None
    loader = template.ProjectLoader(path.parent, boundary)
    env = template.DefinitionEnvironment(loader)
    try:
        compiled = env.from_string(text)
        compiled.filename = str(path)
        return compiled.render(**template.plain(context))
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(
            f"template syntax error: {e.message}",
            hint="check the {{ }} and {% %} blocks on that line",
            where=f"{e.filename or path}:{e.lineno}",
        ) from None
    except Exception as e:  # the template's own doing: whatever it raised is its error
        where = _template_line(e, {str(path), *loader.loaded}) or str(path)
        raise RecipeError(
            _template_message(e), hint=_template_hint(e, context), where=where
        ) from None


def _template_message(e: Exception) -> str:
    if isinstance(e, template.TemplateLimit):
        return f"template too costly: {e}"
    if isinstance(e, jinja2.TemplateNotFound):
        return f"template not found: {e.name!r}"
    if isinstance(e, jinja2.TemplateError):
        return f"template error: {e.message or type(e).__name__}"
    if isinstance(e, RecursionError):
        return "template error: recursion too deep (a macro or include that calls itself?)"
    return f"template error: {type(e).__name__}: {str(e)[:200]}"


def _template_hint(e: Exception, context: dict[str, Any]) -> str:
    if isinstance(e, template.TemplateLimit):
        return (
            f"templates may make at most {template.LIMIT} characters, "
            f"take {template.MAX_STEPS} loop steps and run {template.DEADLINE:.0f}s"
        )
    if isinstance(e, jinja2.TemplateNotFound):
        return "include templates by a name relative to the definition, inside the project"
    if isinstance(e, jinja2.exceptions.SecurityError):
        return (
            "definitions are rendered in a sandbox: use variables, filters and loops, "
            "not Python attributes or files outside the project"
        )
    if isinstance(e, jinja2.UndefinedError):
        return f"variables in scope: {', '.join(sorted(context))}"
    return "check the expression on that line"


def parse(text: str, file: str) -> Document:
    data, origin = yamldoc.read(text, file)
    if not isinstance(data, dict):
        raise RecipeError(
            "the top level must be a mapping", hint="write key: value lines", where=f"{file}:1"
        )
    return Document(data, origin, file)


def merge(base: Document, over: Document) -> Document:
    """Merge ``over`` into ``base``: mappings deeply, lists appended, scalars replaced.

    Every value keeps the ``file:line`` it came from, so an error in a list
    entry an include contributed points into that include.
    """
    origin = dict(base.origin)

    def take(value: Any, src: KeyPath, dst: KeyPath) -> Any:
        if src in over.origin:
            origin[dst] = over.origin[src]
        if isinstance(value, dict):
            for k, v in value.items():
                take(v, (*src, k), (*dst, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                take(v, (*src, i), (*dst, i))
        return value

    def forget(value: Any, path: KeyPath) -> None:
        # The entries of a list or mapping that ``over`` replaces: their lines go with them.
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in children:
            origin.pop((*path, k), None)
            if isinstance(v, dict | list):
                forget(v, (*path, k))

    def walk(a: Any, b: Any, path: KeyPath) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = walk(a[k], v, (*path, k)) if k in a else take(v, (*path, k), (*path, k))
            return out
        if isinstance(a, list) and isinstance(b, list):
            for i, v in enumerate(b):
                take(v, (*path, i), (*path, i + len(a)))
            return a + b
        if isinstance(a, dict | list):
            forget(a, path)
        return take(b, path, path)

    data = walk(base.data, over.data, ())
    return Document(data, origin, over.file)


def load(path: Path, context: dict[str, Any], boundary: Boundary) -> Document:
    """Render, parse and resolve ``include:`` of one definition file inside ``boundary``."""
    try:
        real = boundary.resolve(path.parent, path.name, "the definition")
    except ValueError as e:
        raise RecipeError(str(e), hint=OUTSIDE_HINT, where=str(path)) from None
    return _load(real, context, boundary, (), [0, 0])


def _load(
    path: Path,
    context: dict[str, Any],
    boundary: Boundary,
    seen: tuple[Path, ...],
    count: list[int],
) -> Document:
    if path in seen:
        raise RecipeError(
            f"include loop through {path}",
            hint="a file may not include itself, directly or through others",
            where=str(seen[-1]),
        )
    count[0] += 1
    if count[0] > MAX_INCLUDES:
        raise RecipeError(
            f"more than {MAX_INCLUDES} files included",
            hint="include each shared file once",
            where=str(seen[-1]),
        )
    doc = parse(render(path, context, boundary), str(path))
    count[1] += len(doc.origin)
    if count[1] > MAX_VALUES:
        raise RecipeError(
            f"more than {MAX_VALUES} values in this file and its includes together",
            hint="include each shared file once; definitions are small",
            where=str(path),
        )
    includes = doc.data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise doc.error(("include",), "must be a file name or a list of file names")
    result: Document | None = None
    for i, name in enumerate(includes):
        try:
            target = boundary.resolve(path.parent, name, "included file")
        except ValueError as e:
            raise doc.error(("include", i), str(e), hint=OUTSIDE_HINT) from None
        if not target.is_file():
            raise doc.error(("include", i), f"included file not found: {name}")
        sub = _load(target, context, boundary, (*seen, path), count)
        result = sub if result is None else merge(result, sub)
    return doc if result is None else merge(result, doc)
