"""The size budget of STYLE.md, measured: modules, functions, cyclomatic grades.

Every module under distbuild/ is at most 500 lines; every function (methods and
nested functions included) at most 60 lines and of radon grade C or better.
Each test lists every offender (path:line name and the figure), not just the
first, so one run shows all that is left to split.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from radon.complexity import cc_rank, cc_visit
from radon.visitors import Class

import distbuild

PKG = Path(distbuild.__file__).parent
ROOT = PKG.parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
WORST_GRADE = "C"  # radon: A 1-5, B 6-10, C 11-20, D 21-30, E 31-40, F 41+


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def where(path: Path, line: int, name: str) -> str:
    return f"{path.relative_to(ROOT)}:{line} {name}"


def functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function in ``tree`` with its dotted name (Class.method, outer.inner)."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, Any]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def report(kind: str, offenders: list[str]) -> str:
    return f"{len(offenders)} {kind}:\n  " + "\n  ".join(sorted(offenders))


def test_the_budget_sees_the_package() -> None:
    # Guards the measuring itself: an empty walk would pass every test below.
    files = modules()
    assert len(files) > 50 and PKG / "node/updater.py" in files
    names = {name for name, _ in functions(ast.parse((PKG / "model/image.py").read_text()))}
    assert {"load_image", "ImageDef.locate"} <= names


def test_no_module_over_500_lines() -> None:
    offenders = []
    for path in modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    if offenders:
        pytest.fail(report(f"modules over {MAX_MODULE_LINES} lines", offenders), pytrace=False)


def test_no_function_over_60_lines() -> None:
    offenders = []
    for path in modules():
        for name, node in functions(ast.parse(path.read_text())):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                offenders.append(f"{where(path, node.lineno, name)}: {lines} lines")
    if offenders:
        pytest.fail(report(f"functions over {MAX_FUNCTION_LINES} lines", offenders), pytrace=False)


def test_no_function_below_radon_grade_c() -> None:
    offenders = []
    for path in modules():
        # Methods come both on their own and in their class; closures only in their function.
        todo = list(cc_visit(path.read_text()))
        seen = set()
        while todo:
            block = todo.pop()
            todo.extend(getattr(block, "closures", []))
            if isinstance(block, Class) or block.lineno in seen:
                continue
            seen.add(block.lineno)
            grade = cc_rank(block.complexity)
            if grade > WORST_GRADE:
                offenders.append(
                    f"{where(path, block.lineno, block.fullname)}: grade {grade} ({block.complexity})"
                )
    if offenders:
        pytest.fail(
            report(f"functions of radon grade worse than {WORST_GRADE}", offenders), pytrace=False
        )


def test_the_grade_check_catches_a_tangle() -> None:
    # 25 branches: grade D. The check above must see such a function as an offender.
    body = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(25))
    (block,) = cc_visit(f"def tangle(x):\n{body}\n    return -1\n")
    assert cc_rank(block.complexity) > WORST_GRADE
