"""The one grammar of names, the artifact-path check, and the hostile release index."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distbuild.channel.admin import create_channel
from distbuild.channel.repo import ChannelRepo, Update
from distbuild.channel.serve import serving
from distbuild.core import names
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.core.names import check_name, check_relative_path, check_target_path
from distbuild.core.releases import (
    INDEX_KIND,
    INDEX_TARGET,
    IndexNameError,
    Release,
    ReleaseIndex,
    target_path,
)
from distbuild.node.http import Http
from distbuild.node.tufclient import ChannelClient
from tests.support.channel import EXPIRY, channel, make_keys

GOOD = [
    "node",
    "toolbox",
    "0",
    "A",
    "1.0.0",
    "2026.11.27.2",
    "1.0.0+git.abc123",
    "1.0~rc1",
    "v1-beta_2",
    "armv7",
    "root.img",
    "initrd.img.sigstore.json",
    "a" * 128,
]

BAD = {
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "up two": "../..",
    "up inside": "a/../b",
    "double dot inside": "1..0",
    "trailing dots": "1.0..",
    "slash": "a/b",
    "absolute": "/etc",
    "escape from --version": "/../../some/dir",
    "leading dash": "-rf",
    "leading dot": ".hidden",
    "leading underscore": "_x",
    "leading tilde": "~x",
    "leading plus": "+x",
    "NUL": "a\0b",
    "newline": "a\nb",
    "trailing newline": "1.0\n",
    "carriage return": "1.0\r",
    "tab": "a\tb",
    "space": "a b",
    "leading space": " a",
    "backslash": "a\\b",
    "colon": "a:b",
    "at": "a@b",
    "star": "a*",
    "percent-encoded slash": "a%2fb",
    "shell": "$(id)",
    "129 chars": "a" * 129,
    "fullwidth a": "\uff41bc",
    "cyrillic o": "n\u043ede",
    "one dot leader": "1\u20240",
    "fullwidth solidus": "a\uff0fb",
    "division slash": "a\u2215b",
    "arabic-indic digit": "\u0661",
    "zero-width space": "a\u200bb",
    "right-to-left override": "a\u202eb",
    "combining dot": "a\u0307",
    "del": "a\x7f",
}


@pytest.mark.parametrize("value", GOOD)
def test_the_grammar_accepts(value: str) -> None:
    assert names.problem(value) is None
    assert check_name(value, names.VERSION) == value


@pytest.mark.parametrize("value", list(BAD.values()), ids=list(BAD))
def test_the_grammar_refuses(value: str) -> None:
    assert names.problem(value) is not None
    assert names.NAME.fullmatch(value) is None or ".." in value
    with pytest.raises(UsageError) as info:
        check_name(value, names.VERSION, where="--version")
    assert info.value.message.startswith("--version: invalid version ")
    assert info.value.hint is not None and names.GRAMMAR in info.value.hint
    assert "\0" not in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize("value", [None, 5, 1.0, b"node", ["node"], {"a": 1}, True])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(UsageError, match="not a string"):
        check_name(value, names.IMAGE)


def test_the_error_class_is_the_callers() -> None:
    class Mine(DistbuildError):
        pass

    with pytest.raises(Mine) as info:
        check_name("..", names.ARCH, error=Mine, where="x.json", hint="fix x.json")
    assert info.value.message == "x.json: invalid architecture '..': it holds '..'"
    assert info.value.hint == "fix x.json"


def test_reasons_are_specific() -> None:
    assert names.problem("a\0b") == "it holds a NUL byte"
    assert names.problem("a/b") == "it holds '/'"
    assert names.problem("n\u043ede") == "it holds the non-ASCII character U+043E"
    assert names.problem("-x") == "it starts with '-', not a letter or digit"
    assert names.problem("a" * 129) == "it is 129 characters long (at most 128)"


def test_target_paths() -> None:
    assert check_target_path("node/1.0/amd64/root.img") == "node/1.0/amd64/root.img"
    assert check_target_path("releases.json") == "releases.json"
    for bad in ("", "/node/1", "node//1", "node/../x", "node/1/", "node/1/\0", "node/./x"):
        with pytest.raises(DistbuildError):
            check_target_path(bad)


def test_target_names_are_refused_not_rewritten() -> None:
    assert target_path("node", "1.0", "amd64", "root.img") == "node/1.0/amd64/root.img"
    for parts in (
        ("node", "../..", "amd64", "root.img"),
        ("node", "1.0", "..", "root.img"),
        ("node", "1.0", "amd64", "../root.img"),
        ("../x", "1.0", "amd64", "root.img"),
        ("node", "1.0", "amd64", "a\0"),
    ):
        with pytest.raises(IndexNameError) as info:
            target_path(*parts)
        assert info.value.hint


# -- artifact paths inside a build directory ----------------------------------------


def test_relative_paths_inside_the_directory(tmp_path: Path) -> None:
    (tmp_path / "amd64").mkdir()
    (tmp_path / "amd64/root.img").write_bytes(b"x")
    assert check_relative_path("amd64/root.img", tmp_path) == tmp_path.resolve() / "amd64/root.img"
    # Not there yet (a file about to be written) is fine, as long as it stays inside.
    assert check_relative_path("oci/blobs/x", tmp_path) == tmp_path.resolve() / "oci/blobs/x"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("../../etc/passwd", "it holds '..'"),
        ("amd64/../../x", "it holds '..'"),
        ("/etc/passwd", "it is absolute"),
        ("amd64/root\0.img", "it holds a NUL byte"),
        ("", "not a non-empty string"),
        (".", "it leads out of"),
        ("out/x", "it leads out of"),  # out -> / (a symlink out of the directory)
        ("up/x", "it leads out of"),  # up -> .. (relative, out)
        ("loop/x", "it leads out of"),  # loop -> loop
    ],
)
def test_relative_paths_that_leave_are_refused(tmp_path: Path, value: str, reason: str) -> None:
    base = tmp_path / "build"
    base.mkdir()
    os.symlink("/", base / "out")
    os.symlink("..", base / "up")
    os.symlink("loop", base / "loop")
    with pytest.raises(DistbuildError) as info:
        check_relative_path(value, base, what="artifact path", where="build.json")
    assert info.value.message.startswith("build.json: invalid artifact path ")
    assert reason in info.value.message
    assert info.value.hint


# -- releases.json: what a server sends is hostile ----------------------------------

FILES = {"amd64": {"root.img": "root", "linux": "kernel", "initrd": "initrd", "boot.json": "boot"}}


def _index_json(**changes: object) -> bytes:
    index = ReleaseIndex("stable").with_release(Release("node", "1.0", 1_800_000_000, (), FILES))
    data = json.loads(index.to_json())
    release = data["releases"][0]
    for key, value in changes.items():
        if key in ("channel", "totals"):
            data[key] = value
        else:
            release[key] = value
    return json.dumps(data).encode()


HOSTILE_INDEX = {
    "version ../..": {"version": "../.."},
    "version with slash": {"version": "1.0/../../../etc"},
    "version with NUL": {"version": "1.0\0"},
    "version with newline": {"version": "1.0\nfake log line"},
    "image ..": {"image": ".."},
    "arch ..": {"files": {"..": FILES["amd64"]}},
    "file ../x": {"files": {"amd64": {"../root.img": "root"}}},
    "file absolute": {"files": {"amd64": {"/etc/shadow": "root"}}},
    "kind with slash": {"files": {"amd64": {"root.img": "a/b"}}},
    "channel ../x": {"channel": "../x"},
    "totals ../x": {"totals": {"../x": 1}},
    "version not a string": {"version": 10},
}


@pytest.mark.parametrize("change", list(HOSTILE_INDEX.values()), ids=list(HOSTILE_INDEX))
def test_the_index_parser_refuses_hostile_names(change: dict[str, object]) -> None:
    with pytest.raises(IndexNameError) as info:
        ReleaseIndex.from_json(_index_json(**change))
    assert info.value.message.startswith(f"{INDEX_TARGET}: invalid ")
    assert info.value.hint


def test_the_index_parser_keeps_good_names() -> None:
    index = ReleaseIndex.from_json(_index_json())
    (release,) = index.releases
    assert (release.image, release.version, release.arches) == ("node", "1.0", ["amd64"])


@pytest.mark.parametrize(
    "waves", [[{"after": float("inf"), "max_seed": 1}], [{"after": 1, "max_seed": float("nan")}]]
)
def test_the_index_parser_refuses_huge_numbers(waves: object) -> None:
    with pytest.raises(DistbuildError, match="unreadable release index"):
        ReleaseIndex.from_json(_index_json(waves=waves))


def test_the_node_refuses_a_signed_index_with_a_hostile_version(tmp_path: Path) -> None:
    """Validly signed by the channel's keys (a stolen key, a buggy publisher), still refused."""
    repo, keys = tmp_path / "repo", make_keys(tmp_path / "keys")
    create_channel(repo, channel("stable"), keys)
    channel_repo = ChannelRepo(repo, "stable")
    with channel_repo.lock(), Update(channel_repo, keys, EXPIRY) as update:
        update.add_bytes(INDEX_TARGET, _index_json(version="../../../../etc"), {"kind": INDEX_KIND})
        update.commit()
    with serving(repo) as server:
        client = ChannelClient(
            server.url,
            "stable",
            tmp_path / "node" / "metadata",
            repo / "stable" / "metadata" / "1.root.json",
            Http(),
        )
        with pytest.raises(IndexNameError) as info:
            client.refresh()
    assert "invalid version '../../../../etc'" in info.value.message
    assert not (tmp_path / "etc").exists()


# -- the node's update.yaml names its channel, image and board ------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("channel", "../x"),
        ("channel", "a/b"),
        ("image", ".."),
        ("board", "x\u0430"),
        ("board", "-x"),
    ],
)
def test_the_node_config_checks_names(key: str, value: str) -> None:
    from distbuild.node.config import ConfigError, config_from

    with pytest.raises(ConfigError) as info:
        config_from({"channel_url": "http://127.0.0.1/", key: value}, {key: 4}, "update.yaml")
    assert info.value.message.startswith(f"update.yaml:4: {key}: ")
    assert names.GRAMMAR in info.value.message


def test_the_node_config_keeps_good_names() -> None:
    from distbuild.node.config import config_from

    raw = {"channel_url": "http://127.0.0.1/", "channel": "beta", "image": "node", "board": ""}
    config = config_from(raw, {}, "update.yaml")
    assert (config.channel, config.image, config.board) == ("beta", "node", None)


# -- names inside definitions: an image's version, a recipe's boards ------------------


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    import shutil

    repo = Path(__file__).resolve().parents[2]
    for sub in ("recipes", "images"):
        shutil.copytree(repo / sub, tmp_path / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return tmp_path


@pytest.mark.parametrize("version", ["'1..0'", "'1.0\\n'", "'-1'", "'" + "1" * 129 + "'"])
def test_an_image_version_in_the_definition_is_checked(definitions: Path, version: str) -> None:
    from distbuild.core.arch import ARCHES
    from distbuild.core.errors import RecipeError
    from distbuild.model.image import load_image
    from distbuild.model.recipe import load_recipe

    path = definitions / "images" / "toolbox.yaml"
    path.write_text(path.read_text() + f'version: "{version.strip(chr(39))}"\n')
    with pytest.raises(RecipeError) as info:
        load_image(definitions, "toolbox", load_recipe(definitions, ARCHES["amd64"]))
    assert "toolbox.yaml:" in info.value.message and "version: " in info.value.message
    assert info.value.hint is not None and names.GRAMMAR in info.value.hint


def test_an_image_name_is_checked_before_it_becomes_a_path(definitions: Path) -> None:
    from distbuild.core.arch import ARCHES
    from distbuild.model.image import load_image
    from distbuild.model.recipe import load_recipe

    (definitions / "evil.yaml").write_text("name: evil\n")
    with pytest.raises(UsageError, match="invalid image name"):
        load_image(definitions, "../evil", load_recipe(definitions, ARCHES["amd64"]))


def test_recipe_boards_are_names(definitions: Path) -> None:
    from distbuild.core.arch import ARCHES
    from distbuild.core.errors import RecipeError
    from distbuild.model.recipe import load_recipe

    path = definitions / "recipes" / "amd64.yaml"
    path.write_text(path.read_text().replace("boards: [qemu]", "boards: [qemu, ../pc]"))
    with pytest.raises(RecipeError) as info:
        load_recipe(definitions, ARCHES["amd64"])
    assert "amd64.yaml:24: boards[1]: " in info.value.message
    assert "'../pc' is not a valid board" in info.value.message


@pytest.mark.parametrize("name", ["beta\n", "a..b", "b" * 129, "Beta", "b\u0435ta"])
def test_channel_definitions_refuse_what_the_grammar_refuses(tmp_path: Path, name: str) -> None:
    from distbuild.channel.model import load_channel

    with pytest.raises(UsageError, match="invalid channel name"):
        load_channel(tmp_path, name)


# -- registry tags and references: the OCI grammar is ASCII -------------------------


@pytest.mark.parametrize("tag", ["x\n", "\uff561", "\u00e9", "1.0\u2024", ".x", "-x", "a" * 129])
def test_registry_tags_are_ascii(tag: str) -> None:
    from distbuild.oci.reference import Reference, check_tag

    with pytest.raises(UsageError, match="invalid tag"):
        check_tag(tag)
    if tag.strip() == tag:  # parse strips surrounding white space, as from a shell
        with pytest.raises(UsageError):
            Reference.parse(f"localhost:5000/distbuild/node:{tag}")
    assert check_tag("v1.0_a-b") == "v1.0_a-b"
