"""DESIGN.md §6: the node updater imports no build code.

Walks the AST of every module under distbuild/node and, transitively, of every
distbuild module they import (package ``__init__`` files included, since
importing a module runs them), and checks each import against the rule: the
standard library, tenacity, tuf/securesystemslib, cryptography, requests, and
the shared pure modules. Imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import distbuild
from distbuild.rootfs.install_updater import NODE_PACKAGES

PKG = Path(distbuild.__file__).parent

THIRD_PARTY = {"requests", "tenacity", "tuf", "securesystemslib", "cryptography"}
# The rule install_updater copies by: distbuild.node and the pure core.
ALLOWED = ("distbuild", *(f"distbuild.{p}" for p in NODE_PACKAGES))


def module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (PKG.parent / rel / "__init__.py", PKG.parent / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, name: str) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.append((mod, node.lineno))
            # "from distbuild.node import system" imports a submodule.
            for a in node.names:
                if module_file(f"{mod}.{a.name}") is not None:
                    found.append((f"{mod}.{a.name}", node.lineno))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"distbuild(\.\w+)+", node.value)
            and module_file(node.value) is not None
        ):
            # A module named as a string is one importlib may load (bootctl's registry).
            found.append((node.value, node.lineno))
    return found


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def walk() -> tuple[set[str], list[str]]:
    todo = [f"distbuild.node.{p.stem}" for p in sorted((PKG / "node").glob("*.py"))]
    todo = [t.removesuffix(".__init__") for t in todo]
    seen: set[str] = set()
    bad: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue  # a namespace package (no __init__.py): nothing runs
        for mod, line in imports_of(path, name):
            top = mod.split(".")[0]
            where = f"{path.relative_to(PKG.parent)}:{line}: {mod}"
            if top == "distbuild":
                if (
                    not any(mod == a or mod.startswith(a + ".") for a in ALLOWED[1:])
                    and mod != "distbuild"
                ):
                    bad.append(where)
                todo += [mod, *parents(mod)]
            elif top == "__future__" or top in sys.stdlib_module_names:
                continue
            elif top not in THIRD_PARTY:
                bad.append(where)
    return seen, bad


def test_the_node_imports_only_what_design_allows() -> None:
    seen, bad = walk()
    assert "distbuild.node.cli" in seen and "distbuild.core.bootctl.uboot" in seen
    assert not bad, "the node must not import these:\n" + "\n".join(bad)


def test_the_walk_catches_build_code() -> None:
    # The checker itself: a node module importing build code (or yaml) is caught.
    probe = PKG / "node" / "_probe_test_only.py"
    probe.write_text("def f():\n    import yaml\n    from distbuild.build import ArchBuild\n")
    try:
        _, bad = walk()
    finally:
        probe.unlink()
    assert any(b.endswith(": yaml") for b in bad)
    assert any(b.endswith(": distbuild.build") for b in bad)
