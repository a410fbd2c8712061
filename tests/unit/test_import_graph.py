"""The import graph of distbuild/ (issue 11, DESIGN.md §6), read from the source.

One AST walk over every module gives its imports: ``import a.b``, ``from a
import b`` (an edge to ``a.b`` when that is a module, else to ``a``), relative
imports, and module names written as strings (``"distbuild.core.bootctl.uboot"``:
what an importlib registry may load). Each import is *load-time* when it runs
as the module is imported: at module level or in a class body, including
``if TYPE_CHECKING:`` blocks (they run for mypy, and two modules that name
each other are one module in two files, whatever Python tolerates at run
time); an import inside a function is not, and strings never are.

The rules:

- no import cycle through load-time imports anywhere in distbuild/;
- ``distbuild.node`` imports (anywhere, lazily too) only itself, the core,
  ``distbuild`` itself, the standard library and the libraries the image
  vendors (``install_updater.VENDORED``); ``distbuild.core`` only itself and
  the standard library. The files the image carries are derived from the
  same rule (``install_updater.NODE_PACKAGES``), and the node's whole import
  closure must be among them;
- ``distbuild.sign`` and ``distbuild.oci`` import nothing from ``distbuild.channel``.
"""

from __future__ import annotations

import ast
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import distbuild
from distbuild.rootfs.install_updater import NODE_PACKAGES, VENDORED, node_files

PKG = Path(distbuild.__file__).parent


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (distbuild.*) or the name as written
    load_time: bool
    where: str  # file:line: target


def find_modules(pkg: Path) -> dict[str, Path]:
    """Module name -> file, for every .py under the package (``__init__`` names the package)."""
    found = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


class _Walker(ast.NodeVisitor):
    def __init__(self, name: str, path: Path, modules: dict[str, Path]) -> None:
        self.name, self.modules = name, modules
        self.file = path.relative_to(modules["distbuild"].parent.parent).as_posix()
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.found: list[Import] = []
        self.depth = 0  # functions around the current node

    def add(self, target: str, node: ast.stmt) -> None:
        self.found.append(self._import(target, node.lineno, self.depth == 0))

    def _import(self, target: str, line: int, load_time: bool) -> Import:
        return Import(self.name, target, load_time, f"{self.file}:{line}: {target}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*parts, node.module] if node.module else parts)
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.modules]
        for sub in subs:
            self.add(sub, node)
        if len(subs) < len(node.names):
            self.add(base, node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # A module named as a string is one an importlib registry may load.
        if isinstance(node.value, str) and node.value in self.modules:
            self.found.append(self._import(node.value, node.lineno, False))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function


def import_graph(pkg: Path = PKG) -> tuple[dict[str, Path], list[Import]]:
    modules = find_modules(pkg)
    imports: list[Import] = []
    for name, path in modules.items():
        walker = _Walker(name, path, modules)
        walker.visit(ast.parse(path.read_text(), str(path)))
        imports += walker.found
    return modules, imports


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


# --- the rules, as functions of a graph (so the self-check can feed them a broken copy)


def cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for i in imports:
        if i.load_time and i.target in modules:
            edges[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is ~120 modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(modules)))
    try:
        for v in sorted(edges):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def node_rule_breaches(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    """Imports of node/ and core/ modules outside what the rule allows."""
    node = tuple(f"distbuild.{p}" for p in NODE_PACKAGES)
    bad = []
    for i in imports:
        if not within(i.source, *node):
            continue
        pure = within(i.source, "distbuild.core")  # the core: itself and the standard library
        ours = ("distbuild.core",) if pure else node
        libraries = () if pure else VENDORED
        top = i.target.split(".")[0]
        if top == "distbuild":
            ok = i.target == "distbuild" or within(i.target, *ours)
        else:
            ok = top == "__future__" or top in sys.stdlib_module_names or top in libraries
        if not ok:
            bad.append(i.where)
    return bad


def node_closure(modules: dict[str, Path], imports: list[Import]) -> set[str]:
    """Every distbuild module the node can load: its imports, theirs, and their packages."""
    by_source: dict[str, set[str]] = {}
    for i in imports:
        by_source.setdefault(i.source, set()).add(i.target)
    todo = [m for m in modules if within(m, "distbuild.node")]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]
        todo += [t for t in by_source.get(name, ()) if t.startswith("distbuild")]
    return seen


def channel_imports(modules: dict[str, Path], imports: list[Import]) -> list[str]:
    return [
        i.where
        for i in imports
        if within(i.source, "distbuild.sign", "distbuild.oci")
        and within(i.target, "distbuild.channel")
    ]


# --- the tests

BUILD_AND_OUTPUTS = "distbuild.build"


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    return import_graph()


def test_the_walk_sees_the_whole_package(graph: tuple[dict[str, Path], list[Import]]) -> None:
    modules, imports = graph
    assert "distbuild.node.cli" in modules and "distbuild.core.bootctl.uboot" in modules
    seen = {(i.source, i.target) for i in imports}
    # A load-time edge, a lazy one and a string one, each read as such.
    assert ("distbuild.node.cli", "distbuild.node.updater") in seen
    # The lazy import of run() in ImageFiles._mtools, wherever base.py has it now.
    base = Path(distbuild.__file__).parent / "core/bootctl/base.py"
    line = base.read_text().splitlines().index("        from distbuild.core.run import run") + 1
    lazy = f"distbuild/core/bootctl/base.py:{line}: distbuild.core.run"
    assert Import("distbuild.core.bootctl.base", "distbuild.core.run", False, lazy) in imports
    assert any(
        i.source == "distbuild.core.bootctl.base" and i.target == "distbuild.core.bootctl.uboot"
        for i in imports
    )


def test_no_import_cycle_outside_the_build_and_its_outputs(
    graph: tuple[dict[str, Path], list[Import]],
) -> None:
    found = [c for c in cycles(*graph) if BUILD_AND_OUTPUTS not in c]
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_through_the_build(graph: tuple[dict[str, Path], list[Import]]) -> None:
    found = [c for c in cycles(*graph) if BUILD_AND_OUTPUTS in c]
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_node_imports_only_itself_and_the_core(
    graph: tuple[dict[str, Path], list[Import]],
) -> None:
    bad = node_rule_breaches(*graph)
    assert not bad, "the node (or the core) must not import these:\n" + "\n".join(bad)


def test_the_image_carries_everything_the_node_loads(
    graph: tuple[dict[str, Path], list[Import]],
) -> None:
    modules, _ = graph
    closure = node_closure(*graph)
    assert {
        "distbuild.node.cli",
        "distbuild.core.releases",
        "distbuild.core.bootctl.uboot",
    } <= closure
    carried = {PKG.parent / f for f in node_files()}
    missing = sorted(m for m in closure if modules[m] not in carried)
    assert not missing, f"the node loads modules the image does not carry: {missing}"
    # ...and nothing the rule keeps from the node: no build code rides along.
    assert all(f.parts[1] in (*NODE_PACKAGES, "__init__.py") for f in node_files())


def test_sign_and_oci_import_nothing_from_channel(
    graph: tuple[dict[str, Path], list[Import]],
) -> None:
    bad = channel_imports(*graph)
    assert not bad, "sign/ and oci/ must not import channel/:\n" + "\n".join(bad)


# --- the checker itself: each rule catches a breach planted in a copy of the package


def _planted(tmp_path: Path, files: dict[str, str]) -> tuple[dict[str, Path], list[Import]]:
    """The graph of a copy of the package with ``files`` added (never the source tree)."""
    pkg = tmp_path / "distbuild"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    return import_graph(pkg)


def test_the_rules_catch_planted_breaches(tmp_path: Path) -> None:
    modules, imports = _planted(
        tmp_path,
        {
            "node/_probe.py": "def f():\n    import yaml\n    from distbuild.build import ArchBuild\n",
            "core/_probe.py": "import tuf\nfrom distbuild.node import cli\n",
            "sign/_probe.py": "def f():\n    from distbuild.channel import repo\n",
            "_cycle_a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from distbuild import _cycle_b\n",
            "_cycle_b.py": "from . import _cycle_a\n",
        },
    )
    bad = node_rule_breaches(modules, imports)
    assert "distbuild/node/_probe.py:2: yaml" in bad
    assert "distbuild/node/_probe.py:3: distbuild.build" in bad
    assert "distbuild/core/_probe.py:1: tuf" in bad
    assert "distbuild/core/_probe.py:2: distbuild.node.cli" in bad
    assert "distbuild/sign/_probe.py:2: distbuild.channel.repo" in channel_imports(modules, imports)
    assert ["distbuild._cycle_a", "distbuild._cycle_b"] in cycles(modules, imports)
    # A lazy import is no cycle: it runs after both modules are loaded.
    assert not any("distbuild.node._probe" in c for c in cycles(modules, imports))
