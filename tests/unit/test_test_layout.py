"""The suite's own layout: where support code lives, who imports whom, honest markers.

* A test module (``test_*.py``) is imported by pytest only: no module under tests/
  imports one (what two test modules share lives in tests/support/).
* Support code lives in tests/support/ (one module per topic) or in a conftest.py;
  every other file under tests/ is a test module, a package ``__init__.py`` or data
  (tests/fixtures/). A ``def test_…`` outside a test module would never run.
* A test that needs the Debian mirror (or PyPI) says so with ``network``: checked on
  the collected suite for every test whose fixtures (transitively) build an image
  from the mirror or download the signed wheel. A test that builds by itself, with no
  such fixture, cannot be told apart statically; those are left to review.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

# Fixtures that reach the network, and what for; each is requested by some test.
NETWORK_FIXTURES = {
    "build_image": "builds an image from the Debian mirror (tests/conftest.py)",
    "signed_wheel": "downloads the signed wheel from PyPI (tests/support/sigstore.py)",
}

# Writes each collected test's fixture closure and markers as JSON (-p of a subprocess).
_DUMP_PLUGIN = """\
import json, os

def pytest_collection_modifyitems(session, config, items):
    with open(os.environ["LAYOUT_DUMP"], "w") as f:
        json.dump([{"id": i.nodeid, "fixtures": sorted(getattr(i, "fixturenames", ())),
                    "markers": sorted({m.name for m in i.iter_markers()})} for i in items], f)
"""


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def imported_modules(source: str, name: str, is_package: bool = False) -> list[tuple[str, int]]:
    """Every module an import statement in ``source`` (module ``name``) may load, with
    its line: ``from a import b`` counts ``a`` and ``a.b``, relative imports resolved."""
    package = name if is_package else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def is_test_module(dotted: str) -> bool:
    return dotted.split(".")[0] == "tests" and dotted.rpartition(".")[2].startswith("test_")


def imports_of_test_modules(files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        name = module_name(path)
        for mod, line in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            if is_test_module(mod):
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {mod}")
    return bad


def test_no_module_imports_a_test_module() -> None:
    bad = imports_of_test_modules(python_files())
    assert not bad, "move what they share into tests/support/:\n" + "\n".join(bad)


def test_the_import_check_sees_every_form() -> None:
    forms = [
        "from tests.unit.test_x import walk",
        "from tests.unit import test_x",
        "import tests.unit.test_x",
        "from .test_x import walk",
        "from . import test_x",
    ]
    for form in forms:
        found = imported_modules(form, "tests.unit.test_y")
        assert any(is_test_module(m) for m, _ in found), form
    for fine in ["from tests.support.node import Node", "from tests.conftest import REPO"]:
        assert not any(is_test_module(m) for m, _ in imported_modules(fine, "tests.unit.test_y"))


def test_support_code_lives_in_tests_support_or_a_conftest() -> None:
    misplaced = [
        str(p.relative_to(REPO))
        for p in python_files()
        if not p.name.startswith("test_")
        and p.name not in ("__init__.py", "conftest.py")
        and (TESTS / "support") not in p.parents
    ]
    assert not misplaced, "support code goes to tests/support/<topic>.py: " + ", ".join(misplaced)
    assert not any(p.suffix == ".py" for p in (TESTS / "fixtures").rglob("*")), "fixtures are data"


def test_no_test_function_hides_where_pytest_does_not_look() -> None:
    hidden = []
    for path in python_files():
        if path.name.startswith("test_"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                hidden.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.name}")
    assert not hidden, "never collected:\n" + "\n".join(hidden)


def collected(tmp_path: Path) -> list[dict[str, list[str] | str]]:
    """The whole suite as pytest collects it (nothing runs): ids, fixtures, markers."""
    (tmp_path / "layout_dump.py").write_text(_DUMP_PLUGIN)
    dump = tmp_path / "items.json"
    env = {
        **os.environ,
        "LAYOUT_DUMP": str(dump),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "layout_dump",
         "-p", "no:cacheprovider", str(TESTS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    items: list[dict[str, list[str] | str]] = json.loads(dump.read_text())
    return items


def test_every_test_on_a_network_fixture_is_marked_network(tmp_path: Path) -> None:
    items = collected(tmp_path)
    assert len(items) > 100, "the collection found too few tests to judge"
    for fixture in NETWORK_FIXTURES:
        assert any(fixture in i["fixtures"] for i in items), f"no test uses {fixture}: renamed?"
    unmarked = [
        f"{i['id']}: {NETWORK_FIXTURES[f]}"
        for i in items
        if "network" not in i["markers"]
        for f in NETWORK_FIXTURES
        if f in i["fixtures"]
    ]
    assert not unmarked, "mark these @pytest.mark.network:\n" + "\n".join(unmarked)


def test_background_stories_are_checked_last_and_three_guests_wait_for_them(
    tmp_path: Path,
) -> None:
    """An e2e module with a ``background_story`` is collected after the other
    e2e tests (its story ran beside them), and the update story, which runs
    three guests at once, waits for the background stories first."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(TESTS)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    e2e = [i for i, nodeid in enumerate(ids) if nodeid.startswith("tests/e2e/")]
    assert e2e == list(range(e2e[0], e2e[-1] + 1)), "the e2e tests are not together"
    background = [i for i in e2e if ids[i].startswith("tests/e2e/test_board_orangepi.py::")]
    assert background, "the orangepi story is not collected"
    assert background == e2e[-len(background) :], [ids[i] for i in e2e[-3:]]
    update = [i for i in collected(tmp_path) if str(i["id"]).startswith("tests/e2e/test_update")]
    assert update and all("background_stories" in i["fixtures"] for i in update)
