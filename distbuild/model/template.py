"""Jinja2 for definitions: sandboxed, confined to the project, and bounded.

A definition may be written by someone we do not trust (a pull request), and
``distbuild recipes check`` renders it on a CI runner. So templates run in an
immutable sandbox (no Python internals, no mutation), see only plain data
(no objects with methods that touch files), load other templates only from
inside the project, and work within a budget: every loop step, call and
filter costs one step, every value they make and every piece of output is
measured, and the whole render has a deadline. Anything past a limit is a
:class:`TemplateLimit`, which the loader reports with file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
import string
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePath
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from distbuild.model.boundary import Boundary

LIMIT = 1 << 22  # characters (or items) in any one value, and in all output together
MAX_STEPS = 250_000  # loop iterations + calls + filters in one render
DEADLINE = 5.0  # seconds for one render
MAX_INT_BITS = 4096
MAX_SLICES = 10_000
MAX_RANGE = 100_000  # as Jinja's own sandbox
MAX_SOURCE = 1 << 20  # bytes of one template file
FILTERS = (
    *("abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e"),
    *("escape", "first", "float", "format", "groupby", "indent", "int", "items", "join"),
    *("last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr"),
    *("replace", "reverse", "round", "select", "selectattr", "slice", "sort", "string"),
    *("sum", "title", "tojson", "trim", "truncate", "unique", "upper"),
)
GLOBALS = ("range", "dict", "namespace")
_EACH, _OUT, _CONCAT, _VALUE = "_db_each", "_db_out", "_db_concat", "_db_value"


class TemplateLimit(SecurityError):
    """A template went past one of the render budget's limits."""


def plain(value: Any) -> Any:
    """Template context as plain data: no object the template could call to reach files."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if type(value).__str__ is not object.__str__:
            return str(value)  # e.g. a Platform: "linux/arm/v7"
        names = [f.name for f in dataclasses.fields(value)]
        names += [n for n, a in vars(type(value)).items() if isinstance(a, property)]
        return {n: plain(getattr(value, n)) for n in names if not n.startswith("_")}
    return str(value)


def measure(value: Any, limit: int = LIMIT) -> int:
    """Characters plus container items in ``value``, counted up to just past ``limit``."""
    total, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes):
            total += len(v)
        elif isinstance(v, dict):
            total += len(v)
            if total <= limit:
                stack.extend(v.keys())
                stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            total += len(v)
            if total <= limit:
                stack.extend(v)
        else:
            total += 1
        if total > limit:
            return total
    return total


class Budget:
    """What one render may still spend."""

    def __init__(self) -> None:
        self.steps = 0
        self.output = 0
        self.deadline = time.monotonic() + DEADLINE

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"more than {MAX_STEPS} loop steps and calls")
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {DEADLINE:.0f}s")

    def checked(self, value: Any) -> Any:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"a number larger than 2**{MAX_INT_BITS}")
        if measure(value) > LIMIT:
            raise TemplateLimit(f"a value longer than {LIMIT} characters or items")
        return value

    def emit(self, value: Any) -> Any:
        self.output += measure(self.checked(value))
        if self.output > LIMIT:
            raise TemplateLimit(f"the output is longer than {LIMIT} characters")
        return value


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise TemplateLimit(f"{what} would be longer than {LIMIT} characters or items")


def _small_ints(args: Iterable[Any]) -> None:
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > LIMIT:
            raise TemplateLimit(f"the argument {a} is larger than {LIMIT}")


def _bounded_list(items: Iterable[Any], per_item: int = 0) -> list[Any]:
    """Materialise an iterable, refusing once its items add up past the limit."""
    out, total = [], 0
    for item in items:
        total += measure(item, LIMIT) + per_item
        _need(total <= LIMIT, "the joined text")
        out.append(item)
    return out


def _format_widths(fmt: str) -> int:
    """The widths and precisions a ``str.format`` string asks for, added up."""
    total = 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimit("nested format fields are not allowed in templates")
        total += sum(int(d) if len(d) < 9 else LIMIT + 1 for d in re.findall(r"\d+", spec))
    return total


def _printf_widths(fmt: str) -> int:
    """The widths and precisions a ``%`` format string asks for, added up."""
    total = 0
    for m in re.finditer(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?", fmt):
        for d in m.groups():
            if d == "*":
                raise TemplateLimit("'*' widths are not allowed in templates")
            if d:
                total += int(d) if len(d) < 9 else LIMIT + 1
    return total


def _check_replace(s: Any, old: Any, new: Any) -> None:
    same = isinstance(old, type(s)) and isinstance(new, type(s))
    if isinstance(s, str | bytes) and same:
        count = s.count(old) if old else len(s) + 1
        _need(len(s) + count * len(new) <= LIMIT, "the replaced text")


def _check_str_method(owner: str | bytes, name: str, args: list[Any], kw: dict[str, Any]) -> None:
    """Refuse the string methods that could make far more text than they get."""
    if name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "expandtabs":
        size = args[0] if args else kw.get("tabsize", 8)
        if isinstance(size, int):
            tab = "\t" if isinstance(owner, str) else b"\t"
            _need(len(owner) + owner.count(tab) * size <= LIMIT, "the expanded text")  # type: ignore[arg-type]
    elif name in ("format", "format_map") and isinstance(owner, str):
        _need(len(owner) + _format_widths(owner) <= LIMIT, "the formatted text")
    elif name == "translate":
        table = args[0] if args else {}
        widest = max((measure(v) for v in getattr(table, "values", tuple)()), default=1)
        _need(len(owner) * max(widest, 1) <= LIMIT, "the translated text")


def _binop_check(op: str, left: Any, right: Any) -> None:
    seqs = (str, bytes, list, tuple)
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, seqs) and isinstance(n, int):
                _need(measure(seq) * max(n, 0) <= LIMIT, "the repeated value")
        if isinstance(left, int) and isinstance(right, int):
            _bits(left.bit_length() + right.bit_length())
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        _bits(left.bit_length() * max(right, 0))
    elif op == "+" and isinstance(left, seqs) and isinstance(right, seqs):
        _need(measure(left) + measure(right) <= LIMIT, "the joined value")
    elif op == "%" and isinstance(left, str):
        _need(len(left) + _printf_widths(left) <= LIMIT, "the formatted text")


def _bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimit(f"a number larger than 2**{MAX_INT_BITS}")


class _Guard(NodeTransformer):
    """Route loops, output, ``~`` and literals through the budget's filters."""

    def _wrap(self, node: nodes.Node, name: str) -> nodes.Filter:
        assert isinstance(node, nodes.Expr)
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._wrap(node.iter, _EACH)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [self._wrap(n, _OUT) for n in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(nodes.List(node.nodes, lineno=node.lineno), _CONCAT)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(node, _VALUE)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(node, _VALUE)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(node, _VALUE) if node.ctx == "load" else node


class ProjectLoader(jinja2.BaseLoader):
    """Serves ``{% include %}`` and friends from the including file's directory, inside the project."""

    def __init__(self, directory: Path, boundary: Boundary) -> None:
        self.directory = directory
        self.boundary = boundary
        self.loaded: set[str] = set()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        parts = template.replace("\\", "/").split("/")
        if "\0" in template or template.startswith("/") or ".." in parts:
            raise SecurityError(f"template {template!r}: only relative names inside the project")
        try:
            path = (self.directory / template).resolve()
        except (OSError, RuntimeError) as e:
            raise SecurityError(f"template {template!r}: {e}") from None
        if not self.boundary.contains(path):
            raise SecurityError(f"template {template!r} lies outside the project ({path})")
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        text = read_source(path)
        self.loaded.add(str(path))
        return text, str(path), lambda: True


def read_source(path: Path) -> str:
    """A definition's text: a regular file (never a FIFO that would block) of bounded size."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TemplateLimit(f"{path} is not a regular file")
        data = f.read(MAX_SOURCE + 1)
    if len(data) > MAX_SOURCE:
        raise TemplateLimit(f"{path} is larger than {MAX_SOURCE} bytes")
    return data.decode("utf-8", errors="replace")


class DefinitionEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox definitions render in; one per render, holding that render's budget."""

    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)

    def __init__(self, loader: ProjectLoader) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            loader=loader,
            autoescape=False,
        )
        self.budget = Budget()
        builtin = self.filters
        self.filters = {name: self._guard(name, builtin[name]) for name in FILTERS}
        self.filters.update(
            {_EACH: self._each, _OUT: self._out, _CONCAT: self._concat, _VALUE: self._value}
        )
        self.globals = {name: self.globals[name] for name in GLOBALS}
        self.globals["range"] = self._range

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Guard().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree  # type: ignore[no-any-return]

    def _range(self, *args: int) -> range:
        _small_ints(args)
        r = range(*args)
        if len(r) > MAX_RANGE:
            raise TemplateLimit(f"a range of more than {MAX_RANGE} numbers")
        return r

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        self.budget.tick()
        _binop_check(op, left, right)
        return self.budget.checked(self.binop_table[op](left, right))

    def call(self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.budget.tick()
        _small_ints([*args, *kwargs.values()])
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str | bytes):
            name = getattr(target, "__name__", "")
            if name == "join" and args:
                args = (_bounded_list(args[0], len(owner)), *args[1:])
            _check_str_method(owner, name, list(args), kwargs)
        return self.budget.checked(super().call(__context, __obj, *args, **kwargs))

    def _guard(self, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if hasattr(f, "jinja_pass_arg") else 0

        @functools.wraps(f)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.budget.tick()
            _small_ints([*args[skip:], *kwargs.values()])
            lead, rest = list(args[:skip]), list(args[skip:])
            if rest and isinstance(rest[0], Iterator):
                rest[0] = _bounded_list(rest[0])
            _check_filter(name, rest, kwargs)
            return self.budget.checked(f(*lead, *rest, **kwargs))

        return guarded

    @jinja2.pass_context
    def _each(self, context: jinja2.runtime.Context, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.budget.tick()
            yield item

    @jinja2.pass_context
    def _out(self, context: jinja2.runtime.Context, value: Any) -> Any:
        if isinstance(value, jinja2.Undefined):
            return value
        return self.budget.emit(value)

    @jinja2.pass_context
    def _concat(self, context: jinja2.runtime.Context, parts: list[Any]) -> str:
        _need(sum(measure(p) for p in parts) <= LIMIT, "the joined text")
        return "".join(map(str, parts))

    @jinja2.pass_context
    def _value(self, context: jinja2.runtime.Context, value: Any) -> Any:
        return self.budget.checked(value)


def _check_filter(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse the filter calls that could make far more than they get."""
    if not args:
        return
    value, params = args[0], args[1:]
    if name == "join":
        sep = params[0] if params else kwargs.get("d", "")
        args[0] = _bounded_list(value, measure(sep))
    elif name == "replace" and len(params) >= 2:
        _check_replace(str(value), str(params[0]), str(params[1]))
    elif name == "indent":
        width = params[0] if params else kwargs.get("width", 4)
        w = width if isinstance(width, int) else measure(width)
        text = str(value)
        _need(len(text) + (text.count("\n") + 1) * max(w, 0) <= LIMIT, "the indented text")
    elif name == "format" and isinstance(value, str):
        _need(len(value) + _printf_widths(value) <= LIMIT, "the formatted text")
    elif name == "sum":
        start = params[1] if len(params) > 1 else kwargs.get("start", 0)
        if not isinstance(start, int | float):
            raise TemplateLimit("sum adds numbers only in templates")
    elif name in ("slice", "batch"):
        count = params[0] if params else kwargs.get("slices", kwargs.get("linecount", 1))
        if isinstance(count, int) and count > MAX_SLICES:
            raise TemplateLimit(f"{name} into more than {MAX_SLICES} pieces")
