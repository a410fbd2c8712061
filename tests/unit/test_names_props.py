"""Properties of the grammar of names and of the CLI's checks, over generated hostile input.

Names and arguments are drawn from pieces an attacker would use (``..``,
``/``, NUL, newlines, look-alike letters, huge numbers) mixed with valid
ones; whatever comes out, a name is a single path component that stays
where it is put, and the CLI ends in success or ``error:``/``hint:``, never
an internal error, and writes nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distbuild.cli.main import main
from distbuild.core import names
from distbuild.core.errors import DistbuildError
from tests.support.channel import make_build

PIECES = [
    "a", "Z", "0", "9", ".", "..", "/", "-", "_", "+", "~", "\0", "\n", " ", ":", "@",
    "\\", "%2f", "\u0430", "\uff0f", "\u2215", "\u200b", "\u0661", "\u202e", "1.0", "node",
    "amd64", "beta", "\x7f", "é", "${x}", "*",
]  # fmt: skip
hostile = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
text_or_hostile = st.one_of(hostile, st.text(max_size=140), st.text(alphabet="a.", max_size=8))


@given(text_or_hostile)
@settings(max_examples=500, deadline=None)
def test_a_name_is_one_component_that_stays_put(value: str) -> None:
    reason = names.problem(value)
    expected_ok = names.NAME.fullmatch(value) is not None and ".." not in value
    assert (reason is None) == expected_ok, (value, reason)
    if reason is None:
        joined = PurePosixPath("/base") / value
        assert joined.parent == PurePosixPath("/base") and joined.name == value
        assert os.path.normpath(f"/base/{value}") == f"/base/{value}"
        assert value.isascii() and value.isprintable() and len(value) <= names.MAX_LENGTH
    else:
        with pytest.raises(DistbuildError) as info:
            names.check_name(value, names.VERSION)
        assert info.value.hint


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    (root / "amd64").mkdir()
    (root / "amd64" / "root.img").write_bytes(b"x")
    os.symlink("/", root / "link")
    os.symlink("..", root / "amd64" / "up")
    return root


@given(st.lists(st.sampled_from(["amd64", "root.img", "..", ".", "link", "up", "", "\0", "x"])))
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_relative_path_never_leaves_its_directory(base: Path, parts: list[str]) -> None:
    value = "/".join(parts)
    try:
        path = names.check_relative_path(value, base)
    except DistbuildError as e:
        assert e.hint
        return
    assert path.resolve().is_relative_to(base.resolve())
    assert path.resolve() != base.resolve()


def _run(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("area")
    make_build(root / "builds", "node", "1.0")
    (root / "empty").mkdir()
    return root


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


COMMANDS = [
    ("channel", "show", "--repo", "{empty}", "{name}"),
    ("channel", "show", "--repo", "{empty}", "beta", "--arch", "{name}"),
    ("promote", "{name}", "beta", "--release", "1", "--repo", "{empty}", "--keys", "{empty}"),
    ("promote", "alpha", "beta", "--release", "{name}", "--repo", "{empty}", "--keys", "{empty}"),
    ("push", "{build}", "localhost:{name}/distbuild/node"),
    ("push", "{build}", "{name}"),
    ("push", "{build}", "localhost:5000/distbuild/node", "--tag", "{name}"),
    ("push", "{build}", "localhost:5000/distbuild/node", "--chunk-size", "{name}"),
    ("push", "{build}", "localhost:5000/distbuild/node", "--retries", "{name}"),
    ("merge", "{build}", "{build}", "--out", "{empty}/{name}"),
    ("load", "{build}", "--platform", "{name}", "--docker-host", "unix://{empty}/no.sock"),
    ("lock", "--arch", "{name}", "--image", "no-such-image"),
    ("keys", "init", "--keys", "{empty}/k", "--root-keys", "{name}"),
    ("keys", "init", "--keys", "{empty}/k", "--threshold", "root={name}"),
    ("disk", "set-slot", "/dev/null", "--slot", "a", "--tries", "{name}", "--arch", "{name}"),
]
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "inf", "-0", "0x10", "1e9", "9" * 5000, "\u0661", "\u00b2"]),
)


@given(st.sampled_from(COMMANDS), st.one_of(text_or_hostile, numbers))
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_cli_refuses_cleanly(
    area: Path, project: Path, command: tuple[str, ...], name: str
) -> None:
    before = _tree(area)
    build = area / "builds" / "node" / "1.0"
    args = [a.format(empty=area / "empty", build=build, name=name) for a in command]
    code, err = _run("--project", str(project), *args)
    assert code != 70, (args, err)
    assert "Traceback" not in err
    if code != 0:
        lines = err.splitlines()
        assert any(line.startswith("error: ") for line in lines), (args, err)
        assert any(line.startswith("hint: ") for line in lines), (args, err)
    # Nothing written but what a successful merge or keys init makes, under empty/ only.
    after = [p for p in _tree(area) if p not in before]
    assert all(p.startswith("empty/") for p in after), after
    if after:
        assert code == 0, (args, err, after)
        for p in sorted(after, reverse=True):
            path = area / p
            path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
