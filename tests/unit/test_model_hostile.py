"""Hostile definitions: templates, YAML, paths and numbers crafted to act on the host.

Each case must end in a RecipeError naming file:line (and the key, where there
is one), within seconds, with no side effect; through the CLI it is an
``error:``/``hint:`` pair and an exit code other than 70.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from distbuild.channel.model import load_channel
from distbuild.cli.main import main
from distbuild.core.arch import ARCHES
from distbuild.core.errors import RecipeError
from distbuild.model import yamldoc
from distbuild.model.image import ImageDef, load_image
from distbuild.model.recipe import load_recipe
from tests.conftest import error_and_hint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for sub in ("recipes", "images", "channels"):
        shutil.copytree(REPO / sub, root / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return root.resolve()


@pytest.fixture(params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case with both YAML parsers: libyaml's (when PyYAML has it) and Python's."""
    if request.param == "libyaml" and not yamldoc._FAST:
        pytest.skip("PyYAML without libyaml")
    monkeypatch.setattr(yamldoc, "_FAST", request.param == "libyaml")
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the project that definitions must not read."""
    d = tmp_path / "outside"
    (d / "secret").mkdir(parents=True)
    (d / "secret/id_rsa").write_text("PRIVATE KEY\n")
    (d / "other").mkdir()
    (d / "inc.yaml").write_text("packages: [openssh-server]\n")
    (d / "snippet.j2").write_text("PRIVATE")
    return d.resolve()


def write(proj: Path, body: str, name: str = "evil") -> Path:
    path = proj / "images" / f"{name}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


def load(proj: Path, name: str = "evil", allow: Sequence[Path] = ()) -> ImageDef:
    return load_image(proj, name, load_recipe(proj, ARCHES["amd64"]), allow=allow)


def refused(proj: Path, body: str, name: str = "evil", allow: Sequence[Path] = ()) -> RecipeError:
    write(proj, body, name)
    start = time.monotonic()
    with pytest.raises(RecipeError) as info:
        load(proj, name, allow)
    assert time.monotonic() - start < 20, "a hostile definition must fail quickly"
    assert info.value.hint, str(info.value)
    return info.value


def line_of(e: RecipeError, file: Path) -> str:
    """The text of the line ``e`` points at (asserting it points into ``file``)."""
    assert e.where and e.where.startswith(f"{file}:"), (e.where, str(e))
    line = int(e.where.rsplit(":", 1)[1])
    return file.read_text().splitlines()[line - 1]


def cli(proj: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["--project", str(proj), *args])
    err = capsys.readouterr().err
    if rc == 0:
        return rc, "", ""
    assert rc != 70, err
    error, hint = error_and_hint(err)
    return rc, error, hint


# --- Jinja: no code runs, no Python internals are reachable ---------------------------------

ESCAPES = [
    "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('touch MARK').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch MARK').read() }}",
    "{{ namespace.__init__.__globals__['os'].popen('touch MARK').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ range.__self__ }}",
    "{{ dict.mro()[1].__subclasses__() }}",
    "{{ 'a'.format.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format('x') }}",
    "{{ recipe.path.read_text() }}",
    "{{ (recipe.path ~ '').__class__ }}",
    "{% set x = [] %}{{ x.append(1) }}",
]


@pytest.mark.parametrize("expr", ESCAPES)
def test_template_escapes_run_nothing(
    proj: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], expr: str
) -> None:
    marker = tmp_path / "MARK"
    path = write(proj, f'description: "{expr.replace("MARK", str(marker))}"\n')
    rc, error, hint = cli(proj, capsys, "recipes", "check")
    assert rc == 3 and f"{path}:2: " in error and "template" in error, error
    assert "sandbox" in hint or "variables in scope" in hint or "expression" in hint, hint
    assert not marker.exists()


def test_the_repo_templates_still_render() -> None:
    node = load_image(REPO, "node", load_recipe(REPO, ARCHES["armv7"]))
    assert b"ttyAMA0::respawn" in {f.path: f.content for f in node.files}["/etc/inittab"]


COSTLY = [
    "{{ 'x' * 10**10 }}",
    "{{ [1, 2] * 10**9 }}",
    "{{ range(10**9) | list }}",
    "{{ range(0, 10**6, 1) | list }}",
    "{{ 2 ** 100000000 }}",
    "{{ (10 ** 4000) * (10 ** 4000) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x' | center(10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{% set s = 'x' * 4000000 %}{{ s | replace('x', s) }}",
    "{% set s = 'x' * 4000000 %}{{ s.replace('x', s) }}",
    "{% set s = 'x' * 4000000 %}{{ s | join(s) }}",
    "{% set s = 'x' * 4000000 %}{{ s | indent(4000000) }}",
    "{% set s = 'x' * 3000000 %}{{ s ~ s }}",
    "{% set s = 'x' * 3000000 %}{{ [s, s] }}",
    "{% set s = 'x' * 3000000 %}{{ s }}{{ s }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
]


@pytest.mark.parametrize("expr", COSTLY)
def test_costly_templates_stop_quickly(proj: Path, expr: str) -> None:
    path = write(proj, f"description: >-\n  {expr}\n")
    e = refused(proj, f"description: >-\n  {expr}\n")
    assert "template" in str(e) and line_of(e, path).strip() == expr, str(e)


def test_template_includes_stay_in_the_project(proj: Path, outside: Path) -> None:
    (proj / "images/part.j2").write_text("ok")
    (proj / "images/link.j2").symlink_to(outside / "snippet.j2")
    write(proj, "description: \"{% include 'part.j2' %}\"\n")
    assert load(proj).description == "ok"
    for name in (str(outside / "snippet.j2"), "../../outside/snippet.j2", "link.j2"):
        e = refused(proj, f"description: \"{{% include '{name}' %}}\"\n")
        assert "PRIVATE" not in str(e) and "template" in str(e), str(e)
        assert line_of(e, proj / "images/evil.yaml").startswith("description:")
    assert load(proj, allow=[outside]).description == "PRIVATE"
    (proj / "images/part.j2").write_text("ok\n{{ 1 // 0 }}\n")
    write(proj, "description: \"{% include 'part.j2' %}\"\n")
    with pytest.raises(RecipeError) as info:
        load(proj)
    assert info.value.where == f"{proj}/images/part.j2:2" and "ZeroDivisionError" in str(info.value)


# --- YAML: tags, aliases, depth -------------------------------------------------------------

TAGS = [
    "description: !!python/object/apply:os.system ['touch MARK']",
    "description: !!python/name:os.system",
    "description: !!python/object:distbuild.model.image.ImageDef {}",
    "description: !!binary aGVsbG8=",
    "description: !!timestamp 2024-01-01",
    "description: !custom hello",
    "groups: !!set {a: null}",
    "groups: !!omap [{a: 1}]",
    "!!python/name:os.system : x",
    "description: !!int abc",
]


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("line", TAGS)
def test_unknown_tags_are_refused(proj: Path, tmp_path: Path, line: str) -> None:
    path = write(proj, line.replace("MARK", str(tmp_path / "MARK")) + "\n")
    e = refused(proj, line.replace("MARK", str(tmp_path / "MARK")) + "\n")
    assert line_of(e, path).startswith(line[:12]), str(e)
    assert "tag" in str(e) or "cannot read" in str(e) or "keys" in str(e)
    assert not (tmp_path / "MARK").exists()


def laughs(levels: int, width: int) -> str:
    out = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        out.append(f"a{i}: &a{i} [{refs}]")
    return "description: x\n" + "\n".join(f"x_{line}" for line in out) + "\n"


BOMBS = {
    "billion laughs 9x9": laughs(9, 9),
    "wide 2x1000": laughs(2, 1000),
    "deep 30x2": laughs(30, 2),
    "recursive list": "packages: &a [*a]\n",
    "recursive mapping": "config: &a {labels: *a}\n",
    "recursive deep": "config: &a {labels: {x: [*a]}}\n",
}


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("body", BOMBS.values(), ids=BOMBS.keys())
def test_alias_bombs_and_cycles(proj: Path, body: str) -> None:
    e = refused(proj, body)
    assert any(w in str(e) for w in ("aliases", "alias refers", "deeper")), str(e)
    assert e.where and ".yaml:" in e.where


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting(proj: Path, depth: int) -> None:
    e = refused(proj, "packages: " + "[" * depth + "]" * depth + "\n")
    assert "nested deeper than 64" in str(e) and "evil.yaml:2" in str(e)


@pytest.mark.usefixtures("parser")
def test_block_nesting_and_merge_keys(proj: Path) -> None:
    body = "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "v: 1\n"
    assert "nested deeper" in str(refused(proj, "overrides:\n" + body))
    e = refused(proj, "x: &b {packages: [a]}\noverrides:\n  amd64:\n    <<: *b\n")
    assert "merge keys" in str(e) and "evil.yaml:5" in str(e)


@pytest.mark.usefixtures("parser")
def test_yaml_odds_are_recipe_errors(proj: Path) -> None:
    assert "more than 64 characters" in str(refused(proj, f"version: {'1' * 70}\n"))
    assert "more than 64 characters" in str(refused(proj, f"version: {'1:' * 40}1\n"))
    assert "empty" in str(_raw(proj, "# nothing\n"))
    assert "top level" in str(_raw(proj, "- a\n- b\n"))
    # Implicit dates stay strings (YAML 1.2 has no timestamps).
    write(proj, "description: 2024-01-01\n")
    assert load(proj).description == "2024-01-01"


@pytest.mark.usefixtures("parser")
def test_template_output_yaml_cannot_read_is_an_error(proj: Path) -> None:
    e = refused(proj, "description: \"{{ '\\u0000' }}\"\n")
    assert "invalid YAML" in str(e) and "evil.yaml" in str(e)
    e = refused(proj, "description: \"{% include 'nonexistent.j2' %}\"\n")
    assert "template not found: 'nonexistent.j2'" in str(e)
    assert line_of(e, proj / "images/evil.yaml").startswith("description:")


def _raw(proj: Path, text: str) -> RecipeError:
    (proj / "images/evil.yaml").write_text(text)
    with pytest.raises(RecipeError) as info:
        load(proj)
    assert info.value.hint
    return info.value


# --- include: and overlay: stay inside the project ------------------------------------------


def test_include_outside_the_project(proj: Path, outside: Path) -> None:
    (proj / "images/include/link.yaml").symlink_to(outside / "inc.yaml")
    for name in (str(outside / "inc.yaml"), "../../outside/inc.yaml", "include/link.yaml"):
        path = write(proj, f"include: [include/base.yaml, {name}]\n")
        e = refused(proj, f"include: [include/base.yaml, {name}]\n")
        assert "lies outside the project" in str(e) and "include[1]" in str(e), str(e)
        assert line_of(e, path).startswith("include:")
        assert "--allow-outside-project" in (e.hint or "")
    assert "openssh-server" in load(proj, allow=[outside]).packages


def test_definition_symlinked_out_of_the_project(proj: Path, outside: Path) -> None:
    (outside / "evil.yaml").write_text("name: evil\n")
    (proj / "images/evil.yaml").symlink_to(outside / "evil.yaml")
    with pytest.raises(RecipeError) as info:
        load(proj)
    assert "outside the project" in str(info.value)


def test_include_bombs(proj: Path) -> None:
    (proj / "images/include/fan.yaml").write_text(
        "include: [" + ", ".join(["base.yaml"] * 80) + "]\n"
    )
    assert "more than 64 files" in str(refused(proj, "include: include/fan.yaml\n"))
    (proj / "images/include/loop.yaml").write_text("include: loop.yaml\n")
    assert "include loop" in str(refused(proj, "include: include/loop.yaml\n"))


def test_overlay_outside_the_project(
    proj: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (proj / "images/inside").mkdir()
    (proj / "images/out-link").symlink_to(outside / "secret")
    (proj / "images/inside/up").symlink_to("../../..")
    for name in (
        str(outside / "secret"),
        "../../outside/secret",
        "out-link",
        "inside/up/outside/secret",
    ):
        path = write(proj, f"overlay: {name}\n")
        rc, error, hint = cli(proj, capsys, "recipes", "check")
        assert rc == 3 and f"{path}:2: overlay: " in error and "outside the project" in error
        assert "--allow-outside-project" in hint
    write(proj, "overlay: inside\n")
    assert load(proj).overlay == proj / "images/inside"


def test_overlay_holds_only_files_directories_and_symlinks(proj: Path, outside: Path) -> None:
    tree = proj / "images/tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/motd").write_text("hi\n")
    (tree / "etc/link").symlink_to("/root/.ssh/id_rsa")
    (tree / "dir-link").symlink_to(outside / "secret")
    write(proj, "overlay: tree\n")
    assert load(proj).overlay == tree
    os.mkfifo(tree / "etc/fifo")
    e = refused(proj, "overlay: tree\n")
    assert e.key == "overlay" and "'etc/fifo'" in str(e) and "not a file" in str(e)
    assert line_of(e, proj / "images/evil.yaml") == "overlay: tree"


def test_allow_outside_project_allows_exactly_that_path(
    proj: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    allow = ["--allow-outside-project", str(outside / "secret")]
    write(proj, f"overlay: {outside / 'secret'}\n")
    assert cli(proj, capsys, "recipes", "check", *allow)[0] == 0
    assert load(proj, allow=[outside / "secret"]).overlay == outside / "secret"
    for name in (outside / "other", outside, outside / "secret/../other"):
        write(proj, f"overlay: {name}\n")
        rc, error, _ = cli(proj, capsys, "recipes", "check", *allow)
        assert rc == 3 and "outside the project" in error, error
    assert not (proj / "images/evil.lock.json").exists()


# --- numbers and paths ----------------------------------------------------------------------

NUMBERS = [
    ("users: [{name: u, uid: 100000000000000000000000000}]", "users[0].uid", "out of range"),
    ("users: [{name: u, uid: -1}]", "users[0].uid", "out of range"),
    ("users: [{name: u, uid: 4294967295}]", "users[0].uid", "out of range"),
    ("users: [{name: u, uid: true}]", "users[0].uid", "integer"),
    ("users: [{name: u, uid: 1.5}]", "users[0].uid", "integer"),
    ("users: [{name: u, uid: 1, gid: -5}]", "users[0].gid", "out of range"),
    ("groups: [{name: g, gid: 99999999999}]", "groups[0].gid", "out of range"),
    ("groups: [{name: 'g/../x', gid: 5}]", "groups[0].name", "not a valid group"),
    ("files: {/a: {content: x, mode: '10000'}}", "files./a.mode", "octal mode"),
    ("files: {/a: {content: x, mode: '-1'}}", "files./a.mode", "octal mode"),
    ("files: {/a: {content: x, mode: '0999'}}", "files./a.mode", "octal mode"),
    ("files: {/a: {content: x, mode: 0755}}", "files./a.mode", "quoted octal"),
    ('directories: ["/a", ""]', "directories[1]", "not a usable path"),
    ("symlinks: {/a: ''}", "symlinks./a", "not a usable path"),
    (f"symlinks: {{/a: /{'a' * 5000}}}", "symlinks./a", "not a usable path"),
    ("users: [{name: u, uid: 1, home: ''}]", "users[0].home", "not a usable path"),
]


@pytest.mark.parametrize(("body", "key", "message"), NUMBERS)
def test_numbers_and_paths_have_ranges(proj: Path, body: str, key: str, message: str) -> None:
    path = write(proj, body + "\n")
    e = refused(proj, body + "\n")
    assert e.key and e.key.startswith(key) and message in str(e), str(e)
    assert line_of(e, path)


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize(
    "body",
    [
        'files: {"/a\\0b": x}',
        'directories: ["/a\\0b"]',
        'symlinks: {/a: "/b\\0"}',
        'users: [{name: u, uid: 1, shell: "/bin/sh\\0"}]',
        'description: "\\ud800"',
        'files: {"/\\udcff": x}',
    ],
)
def test_nul_and_lone_surrogates(proj: Path, body: str) -> None:
    e = refused(proj, body + "\n")
    assert any(w in str(e) for w in ("NUL", "not valid Unicode", "invalid Unicode")), str(e)
    assert line_of(e, proj / "images/evil.yaml") == body


def test_numbers_in_range_are_accepted(proj: Path) -> None:
    write(
        proj,
        "users: [{name: u, uid: 4294967294, gid: 0}]\ngroups: [{name: g, gid: 4294967294}]\n"
        "files: {/a: {content: x, mode: '7777'}, /b: {content: y, mode: '0o640'}}\n",
    )
    img = load(proj)
    assert img.users[0].uid == 2**32 - 2 and img.groups[0].gid == 2**32 - 2
    assert {f.path: f.mode for f in img.files} == {"/a": 0o7777, "/b": 0o640}


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("memory: 512", "memory: 100000000000000000000000000", "qemu.memory"),
        ("root_mib: 160", "root_mib: -1", "disk.root_mib"),
        ("tries: 3", "tries: 0", "boot.tries"),
    ],
)
def test_recipe_numbers(proj: Path, old: str, new: str, key: str) -> None:
    p = proj / "recipes/arm64.yaml"
    p.write_text(p.read_text().replace(old, new))
    with pytest.raises(RecipeError) as info:
        load_recipe(proj, ARCHES["arm64"])
    assert info.value.key == key and "out of range" in str(info.value)
    assert line_of(info.value, p).strip() == new


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("keep: 10", "keep: -1", "keep"),
        ("keep: 10", "keep: 100000000000000000000000000", "keep"),
        ("timestamp: 1d", "timestamp: 99999999999999999w", "expires.timestamp"),
        ("timestamp: 1d", "timestamp: !!python/object/apply:os.getcwd []", ""),
    ],
)
def test_channel_numbers_and_tags(proj: Path, old: str, new: str, key: str) -> None:
    p = proj / "channels/beta.yaml"
    p.write_text(p.read_text().replace(old, new))
    with pytest.raises(RecipeError) as info:
        load_channel(proj, "beta")
    assert (info.value.key or "") == key and line_of(info.value, p).strip() == new


# --- where merged list entries come from ------------------------------------------------------


def test_merged_list_entries_keep_their_origin(proj: Path) -> None:
    inc = proj / "images/include/pk.yaml"
    inc.write_text("packages:\n  - busybox\n  - Not_A_Package\n")
    write(proj, "include: include/pk.yaml\npackages: [dropbear]\n")
    with pytest.raises(RecipeError) as info:
        load(proj)
    assert info.value.key == "packages[1]" and line_of(info.value, inc) == "  - Not_A_Package"
    write(proj, "include: include/pk.yaml\npackages: [dropbear, Bad_Too]\n")
    inc.write_text("packages: [busybox]\n")
    with pytest.raises(RecipeError) as info:
        load(proj)
    assert info.value.key == "packages[2]"
    assert line_of(info.value, proj / "images/evil.yaml").startswith("packages:")


def test_a_package_from_an_included_override_names_the_included_line(proj: Path) -> None:
    # The included file gives its arch's packages as one name (a list of one): the
    # error is on that line of the included file, not on the definition's packages:.
    inc = proj / "images/include/pk.yaml"
    inc.write_text("# shared\noverrides:\n  amd64:\n    packages: Not_A_Package\n")
    e = refused(proj, "include: include/pk.yaml\npackages: [dropbear]\n")
    assert "'Not_A_Package' is not a Debian package name" in str(e)
    assert line_of(e, inc) == "    packages: Not_A_Package"
    assert e.key == "overrides.amd64.packages[0]"


def test_a_package_replacing_an_included_list_names_its_own_line(proj: Path) -> None:
    # One name replaces the included list: the lines of the entries it replaced are gone.
    inc = proj / "images/include/pk.yaml"
    inc.write_text("packages:\n  - busybox\n  - dropbear\n")
    e = refused(proj, "include: include/pk.yaml\n\npackages: Not_A_Package\n")
    assert line_of(e, proj / "images/evil.yaml") == "packages: Not_A_Package"


def test_the_kernel_package_error_names_the_recipe(proj: Path) -> None:
    recipe = proj / "recipes/amd64.yaml"
    recipe.write_text(recipe.read_text().replace("linux-image-amd64", "Linux_Image"))
    e = refused(proj, "kernel: true\npackages: [busybox]\n")
    assert "'Linux_Image' is not a Debian package name" in str(e)
    assert e.where is not None and e.where.startswith(str(recipe)) and e.key == "kernel.package"


def test_override_entries_keep_their_origin(proj: Path) -> None:
    body = "directories: [/a]\noverrides:\n  amd64:\n    directories:\n      - /b\n      - ''\n"
    e = refused(proj, body)
    assert e.key == "directories[2]" and line_of(e, proj / "images/evil.yaml") == "      - ''"
    body = "files: {/x: y}\noverrides:\n  amd64:\n    files:\n      /z: {content: q, mode: '99'}\n"
    e = refused(proj, body)
    assert e.key == "files./z.mode" and "/z: {content: q" in line_of(e, proj / "images/evil.yaml")


ISSUE_CASES = {
    "popen": (
        "description: \"{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}\"",
        2,
    ),
    "overlay /root/.ssh": ("overlay: /root/.ssh", 2),
    "billion laughs": (laughs(9, 9), 3),
    "recursive anchor": ("packages: &a [*a]", 2),
    "python tag": ("description: !!python/object/apply:os.system ['touch MARK']", 2),
    "uid 10**26": ("users: [{name: u, uid: 100000000000000000000000000}]", 2),
    "negative uid": ("users: [{name: u, uid: -1}]", 2),
    "mode above 07777": ("files: {/a: {content: x, mode: '17777'}}", 2),
}


@pytest.mark.parametrize(("body", "line"), ISSUE_CASES.values(), ids=ISSUE_CASES.keys())
def test_the_issue_cases_through_the_cli(
    proj: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: int
) -> None:
    marker = tmp_path / "MARK"
    path = write(proj, body.replace("MARK", str(marker)) + "\n")
    start = time.monotonic()
    rc, error, hint = cli(proj, capsys, "recipes", "check")
    assert time.monotonic() - start < 20
    assert rc == 3 and error.startswith(f"error: {path}:{line}: "), error
    assert hint.startswith("hint: ") and len(hint) > 12
    assert not marker.exists()


def test_fifo_definition_does_not_hang(proj: Path) -> None:
    os.mkfifo(proj / "images/include/fifo.yaml")
    e = refused(proj, "include: include/fifo.yaml\n")
    assert "fifo.yaml" in str(e)
