"""Layering of the publish side: ``sign/`` and ``oci/`` import nothing from ``channel/``.

``channel/`` composes the publish pipeline out of ``oci/`` and ``sign/``; the
reverse would make what a publish does depend on import order again. Every
import is checked, at module level or inside a function, absolute or relative.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

LOWER = ("sign", "oci")
UPPER = "distbuild.channel"


def package_of(path: Path) -> str:
    """``distbuild/oci/release.py`` → ``distbuild.oci``."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])


def imported(source: bytes, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``source``, relative ones resolved in ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            # 'from distbuild import channel' imports the package itself.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def is_channel(module: str) -> bool:
    return module == UPPER or module.startswith(UPPER + ".")


@pytest.mark.parametrize("area", LOWER)
def test_lower_layers_do_not_import_channel(area: str) -> None:
    files = sorted((REPO / "distbuild" / area).rglob("*.py"))
    assert files, f"no modules under distbuild/{area}"
    bad = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in files
        for line, module in imported(path.read_bytes(), package_of(path))
        if is_channel(module)
    ]
    assert bad == [], "sign/ and oci/ must not import channel/:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "text",
    [
        "import distbuild.channel.hooks",
        "from distbuild.channel.hooks import NewTarget",
        "from distbuild import channel",
        "from ..channel import hooks",
        "from .. import channel",
        "def f():\n    from distbuild.channel import page",
    ],
)
def test_the_walk_sees_every_form_of_import(text: str) -> None:
    """Each way of importing channel/ from a module of oci/ is caught (the test can fail)."""
    found = [m for _, m in imported(text.encode(), "distbuild.oci") if is_channel(m)]
    assert found, f"not seen: {text!r}"


def test_the_walk_passes_imports_of_other_areas() -> None:
    text = b"from ..sign.bundles import SUFFIX\nimport distbuild.channels_extra\n"
    assert [m for _, m in imported(text, "distbuild.oci") if is_channel(m)] == []
