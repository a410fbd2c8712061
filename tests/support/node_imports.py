"""The node's import closure (DESIGN.md §6: the node updater imports no build code).

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

PKG = Path(distbuild.__file__).parent

THIRD_PARTY = {"requests", "tenacity", "tuf", "securesystemslib", "cryptography"}
# Shared modules the node may use: pure (standard library + errors) by their own rule.
SHARED = {
    "distbuild",
    "distbuild.errors",
    "distbuild.arch",
    "distbuild.fsutil",
    "distbuild.bootctl",
    "distbuild.bootctl.base",
    "distbuild.bootctl.uboot",
    "distbuild.bootctl.systemd_boot",
    "distbuild.bootctl.__main__",
    "distbuild.names",  # stdlib-only grammar of names (channels, versions, target parts)
    "distbuild.channel.releases",  # stdlib-only release index (its docstring says the node uses it)
    "distbuild.run",  # the one door for processes; stdlib + ui
    "distbuild.ui",
}


def module_file(name: str, pkg: Path = PKG) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (pkg.parent / rel / "__init__.py", pkg.parent / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path, name: str, pkg: Path = PKG) -> list[tuple[str, int]]:
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
                if module_file(f"{mod}.{a.name}", pkg) is not None:
                    found.append((f"{mod}.{a.name}", node.lineno))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"distbuild(\.\w+)+", node.value)
            and module_file(node.value, pkg) is not None
        ):
            # A module named as a string is one importlib may load (bootctl's registry).
            found.append((node.value, node.lineno))
    return found


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def walk(pkg: Path = PKG) -> tuple[set[str], list[str]]:
    """The modules the node imports, and each import the rule forbids (``file:line: module``).

    ``pkg``: the ``distbuild`` package directory to walk (a copy, to test the walk itself).
    """
    todo = [f"distbuild.node.{p.stem}" for p in sorted((pkg / "node").glob("*.py"))]
    todo = [t.removesuffix(".__init__") for t in todo]
    seen: set[str] = set()
    bad: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, pkg)
        if path is None:
            continue  # a namespace package (no __init__.py): nothing runs
        for mod, line in imports_of(path, name, pkg):
            top = mod.split(".")[0]
            where = f"{path.relative_to(pkg.parent)}:{line}: {mod}"
            if top == "distbuild":
                if not (mod.startswith("distbuild.node") or mod in SHARED):
                    bad.append(where)
                todo += [mod, *parents(mod)]
            elif top == "__future__" or top in sys.stdlib_module_names:
                continue
            elif top not in THIRD_PARTY:
                bad.append(where)
    return seen, bad
