"""DESIGN.md §6: the node updater imports no build code.

The walk (tests/support/node_imports.py) follows every module under
distbuild/node and, transitively, every distbuild module they import, and
checks each import against the rule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.node_imports import PKG, walk


def test_the_node_imports_only_what_design_allows() -> None:
    seen, bad = walk()
    assert "distbuild.node.cli" in seen and "distbuild.bootctl.uboot" in seen
    assert not bad, "the node must not import these:\n" + "\n".join(bad)


def test_the_walk_catches_build_code(tmp_path: Path) -> None:
    # The checker itself: a node module importing build code (or yaml) is caught.
    # The probe goes into a copy of the package, never into the source tree.
    pkg = tmp_path / "distbuild"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    probe = pkg / "node" / "_probe_test_only.py"
    probe.write_text("def f():\n    import yaml\n    from distbuild.build import ArchBuild\n")
    _, bad = walk(pkg)
    assert any(b.endswith(": yaml") for b in bad)
    assert any(b.endswith(": distbuild.build") for b in bad)
