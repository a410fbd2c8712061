"""One CLI vocabulary: the same flag means the same thing in every command.

The rules of distbuild.cli.options, checked on the whole command tree (so a new
command that breaks them fails here), and the JSON every reporting command
prints, from real channels, key directories and a real GPT disk image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from distbuild.channel.keys import KeyStore
from distbuild.channel.model import ROLES
from distbuild.cli import options
from distbuild.cli.main import cli, main
from distbuild.core.bootctl.base import ImageFiles, SlotBoot, open_bootctl
from distbuild.node import cli as node_cli
from tests.conftest import REPO, error_and_hint
from tests.support.disk import gpt_with_esp
from tests.support.node import Node

# Commands whose stdout is not a result: boot's is the guest's serial console,
# serve runs until interrupted (it prints its URL for scripts to read).
NOT_REPORTING = {"distbuild boot", "distbuild serve"}
# The node's: the daemon and the clock keeper run until stopped; the network
# installer is run by the installer's init and speaks in console lines.
NODE_NOT_REPORTING = {"run", "time-sync", "install-disk"}


def commands(
    group: click.Group = cli, path: str = "distbuild"
) -> Iterator[tuple[str, click.Command]]:
    """Every leaf command under ``group``, with its full name."""
    for name, command in sorted(group.commands.items()):
        full = f"{path} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, full)
        else:
            yield full, command


def flags(command: click.Command) -> dict[str, click.Option]:
    return {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts}


def kind(param: click.Parameter) -> tuple[object, ...]:
    """What a parameter's values are: the type and its bounds, not its help text."""
    t = param.type
    shape: tuple[object, ...] = (type(t).__name__, getattr(param, "is_flag", False))
    if isinstance(t, click.IntRange | click.FloatRange):
        return (*shape, t.min, t.max, t.min_open, t.max_open)
    if isinstance(t, click.Path):
        return (*shape, t.file_okay, t.dir_okay)
    if isinstance(t, click.Choice):
        return (*shape, tuple(t.choices))
    if isinstance(t, options.Name):
        return (*shape, t.what)
    return shape


ALL = dict(commands())


def test_the_tree_is_walked() -> None:
    # The walk finds the nested groups' commands, so the rules below see them.
    assert {"distbuild image", "distbuild disk set-slot", "distbuild keys init"} <= set(ALL)
    assert {"distbuild channel refresh", "distbuild recipes check"} <= set(ALL)
    assert len(ALL) >= 20


@pytest.mark.parametrize("name", sorted(set(ALL) - NOT_REPORTING))
def test_every_reporting_command_has_the_shared_json_option(name: str) -> None:
    option = flags(ALL[name]).get("--json")
    assert isinstance(option, options.JsonOption), f"{name} has no shared --json"
    assert option.name == "as_json" and option.is_flag


def test_every_arch_option_is_the_shared_one() -> None:
    taking = {}
    for name, command in ALL.items():
        for param in command.params:
            if "--arch" in getattr(param, "opts", ()) or param.name in ("arch", "arches"):
                assert isinstance(param, options.ArchOption), f"{name}: {param.name}"
                taking[name] = param
    assert {"distbuild image", "distbuild lock", "distbuild channel show"} <= set(taking)
    assert {"distbuild disk status", "distbuild boot"} <= set(taking)
    # 'all' where a command builds several arches; one arch elsewhere.
    for name, param in taking.items():
        arch_type = param.type
        assert isinstance(arch_type, options.Arch)
        assert arch_type.allow_all == arch_type.several == param.multiple, name
    assert taking["distbuild image"].multiple and taking["distbuild lock"].multiple


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["image", "--arch", "amd64,sparc"], "choose one of: armv7, arm64, amd64 or all"),
        (["lock", "--arch", "all", "--arch", "x86"], "choose one of: armv7, arm64, amd64 or all"),
        (
            ["channel", "show", "beta", "--repo", ".", "--arch", "all"],
            "choose one of: armv7, arm64, amd64",
        ),
        (["disk", "status", "/dev/null", "--arch", "x86"], "choose one of: armv7, arm64, amd64"),
        (["boot", "/dev/null", "--arch", "amd64,arm64"], "choose one of: armv7, arm64, amd64"),
    ],
)
def test_arch_values_are_checked_against_the_arch_table(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error, shown = error_and_hint(capsys.readouterr().err)
    assert error.startswith("error: --arch: ")
    assert shown == f"hint: {hint}"


def test_no_flag_name_has_two_meanings() -> None:
    meanings: dict[str, set[tuple[object, ...]]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    for name, command in ALL.items():
        for flag, option in flags(command).items():
            if isinstance(option, options.ArchOption):
                continue  # one arch or several: checked above
            meanings[flag].add(kind(option))
            where[flag].append(name)
    clashes = {flag: (kinds, where[flag]) for flag, kinds in meanings.items() if len(kinds) > 1}
    assert not clashes
    # Flags many commands share come from one definition: the same help everywhere.
    for flag in ("--json", "--keys", "--repo"):
        helps = {flags(ALL[n])[flag].help for n in where[flag]}
        assert len(where[flag]) > 1 and len(helps) == 1, flag


def test_version_is_the_programs_and_release_is_a_release() -> None:
    top = {o for p in cli.params for o in getattr(p, "opts", ())}
    assert "--version" in top
    assert CliRunner().invoke(cli, ["--version"]).output.startswith("distbuild, version ")
    for name, command in ALL.items():
        assert "--version" not in flags(command), name
    for name in ("distbuild image", "distbuild promote"):
        release = flags(ALL[name])["--release"]
        assert release.type is options.VERSION and release.name == "version"


def test_every_count_is_a_bounded_integer() -> None:
    counted = set()
    for name, command in ALL.items():
        for flag, option in flags(command).items():
            if isinstance(option.type, click.types.IntParamType):
                assert isinstance(option.type, click.IntRange), f"{name} {flag}"
                counted.add(flag)
    assert {"--tries", "--retries", "--compression-level", "--root-keys", "--memory"} <= counted


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["disk", "set-slot", "/dev/null", "--slot", "a", "--tries", "0"], "1<=x<=99"),
        (["keys", "init", "--keys", "k", "--root-keys", "0"], "1<=x<=64"),
        (["keys", "rotate-root", "--keys", "k", "--repo", "r", "--root-keys", "0"], "1<=x<=64"),
        (["keys", "init", "--keys", "k", "--threshold", "root=0"], "from 1 to 64"),
        (["keys", "rotate-root", "--keys", "k", "--repo", "r", "--threshold", "2"], "ROLE=N"),
        (
            ["keys", "rotate-root", "--keys", "k", "--repo", "r", "--threshold", "targets=1"],
            "ROLE one of root ",
        ),
    ],
)
def test_zero_is_refused_where_it_would_mean_nothing(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 tries or keys is no setting: refused with a hint, never taken as 'the default'."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


# -- the node's CLI (argparse) --------------------------------------------------------


def node_commands() -> dict[str, argparse.ArgumentParser]:
    parser = node_cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_node_cli_speaks_the_same_vocabulary() -> None:
    parsers = node_commands()
    assert {"status", "mark-good", "rollback", "check", "apply"} <= set(parsers)
    for name, parser in parsers.items():
        opts = {o: a for a in parser._actions for o in a.option_strings}
        if name in NODE_NOT_REPORTING:
            continue
        assert "--json" in opts, name
        assert opts["--json"].dest == "json" and opts["--json"].help == "print the result as JSON"
        assert "--version" not in opts and "--arch" not in opts
    top = {o: a for a in node_cli._parser()._actions for o in a.option_strings}
    assert isinstance(top["--version"], argparse._VersionAction)


def test_the_node_cli_does_not_import_click() -> None:
    code = "import sys, distbuild.node.cli; print('click' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_node_mark_good_and_rollback_print_json(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    node.setup("http://127.0.0.1:9/", b"{}", "v1")
    base = [sys.executable, "-m", "distbuild.node.cli", "--root", str(node.root)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)

    done = run("mark-good", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == {
        "action": "mark-good",
        "message": "slot a (v1) marked good",
        "ok": True,
        "rebooting": False,
        "version": "v1",
    }
    assert run("mark-good").stdout == "slot a (v1) marked good\n"
    # Slot b holds nothing good: refused the same way with or without --json.
    for args in (("rollback", "--json"), ("rollback",)):
        refused = run(*args)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith("error: slot b holds no version known to be good")
    # With a good v0 in slot b, rollback reports the reboot into it.
    bc = node.bootctl()
    bc.install("b", SlotBoot("v0", b"kernel-0", b"initrd-0", "distbuild.version=v0"))
    bc.set_next("b", 3)
    bc.mark_good("b")
    bc.set_next("a", 3)
    done = run("rollback", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "action": "reboot",
        "message": "rebooting into v0",
        "ok": True,
        "rebooting": True,
        "version": "v0",
    }
    assert node.reboot_marker.exists()


# -- what --json prints, from real key directories, channels and disk images ----------


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Any:
    """Run ``distbuild ARGV --json``: exit 0 and exactly one JSON document on stdout."""
    capsys.readouterr()
    code = main(["--project", str(REPO), *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)  # one document: trailing text would not parse


def test_recipes_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, "recipes", "check")
    assert doc["ok"] is True
    assert "recipes/amd64.yaml" in doc["checked"] and "images/node.yaml (armv7)" in doc["checked"]


def test_keys_and_channel_commands_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, repo, online = tmp_path / "keys", tmp_path / "repo", tmp_path / "online"
    doc = run_json(
        capsys, "keys", "init", "--keys", keys, "--root-keys", "2", "--threshold", "root=2"
    )
    assert doc["keys"] == str(keys) and sorted(doc["roles"]) == sorted(ROLES)
    assert doc["roles"]["root"]["threshold"] == 2 and len(doc["roles"]["root"]["keyids"]) == 2
    assert doc["roles"]["root"]["keyids"] == list(KeyStore.load(keys).roles["root"].keyids)

    doc = run_json(capsys, "channel", "list", "--repo", repo)
    assert doc == {
        "channels": [{"name": n, "published": False} for n in ("alpha", "beta", "stable")]
    }
    doc = run_json(capsys, "channel", "init", "beta", "--repo", repo, "--keys", keys)
    assert doc == {"channel": "beta", "created": True, "path": str(repo / "beta")}
    doc = run_json(capsys, "channel", "init", "beta", "--repo", repo, "--keys", keys)
    assert doc["created"] is False
    assert run_json(capsys, "channel", "list", "--repo", repo)["channels"][1] == {
        "name": "beta",
        "published": True,
    }

    common = ("--repo", repo, "--keys", keys, "--allow-root-keys")
    doc = run_json(capsys, "channel", "refresh", "--force", *common)
    [beta] = doc["channels"]
    assert beta["channel"] == "beta" and {"timestamp", "snapshot"} <= set(beta["resigned"])
    assert beta["root_expires"].endswith("Z")

    doc = run_json(
        capsys, "keys", "rotate-root", "--keys", keys, "--repo", repo, "--threshold", "root=1"
    )
    assert doc["root_versions"] == {"beta": 2} and doc["finished"] == []
    assert doc["roles"]["root"]["threshold"] == 1

    doc = run_json(capsys, "keys", "export-online", "--keys", keys, "--out", online)
    assert sorted(doc["roles"]) == ["snapshot", "targets", "timestamp"]
    assert KeyStore.load(online).root_key_files() == []


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A GPT disk image with an ESP (FAT) holding slot a, good, as a disk build leaves it."""
    disk = gpt_with_esp(tmp_path)
    bc = open_bootctl("systemd-boot", ImageFiles(disk, 1 << 20), "")
    bc.install("a", SlotBoot("1.0", b"kernel", b"initrd", "distbuild.version=1.0"))
    bc.set_next("a", 3)
    bc.mark_good("a")
    bc.install("b", SlotBoot("2.0", b"kernel-2", b"initrd-2", "distbuild.version=2.0"))
    return disk


def test_disk_commands_json_and_text(disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    on = (disk, "--arch", "amd64")
    doc = run_json(capsys, "disk", "status", *on)
    assert doc["order"] == ["a"] and doc["slots"]["a"]["good"] is True
    assert doc["slots"]["b"] == {
        "slot": "b",
        "bootable": False,
        "tries_left": 0,
        "good": False,
        "version": "2.0",
    }
    # No --tries: the recipe's count (amd64: 3), not a 0 taken for "unset".
    doc = run_json(capsys, "disk", "set-slot", *on, "--slot", "b")
    assert doc["order"][0] == "b" and doc["slots"]["b"]["tries_left"] == 3
    doc = run_json(capsys, "disk", "set-slot", *on, "--slot", "b", "--tries", "1")
    assert doc["slots"]["b"]["tries_left"] == 1
    doc = run_json(capsys, "disk", "mark-good", *on, "--slot", "b")
    assert doc["slots"]["b"]["good"] is True
    doc = run_json(capsys, "disk", "mark-unbootable", *on, "--slot", "a")
    assert doc["slots"]["a"]["bootable"] is False and doc == run_json(capsys, "disk", "status", *on)
    # Text by default: the same facts, for people.
    assert main(["--project", str(REPO), "disk", "status", *map(str, on)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines() == [
        "boot order: b",
        "slot a:     1.0 (not bootable)",
        "slot b:     2.0 (good)",
    ]
    assert main(["--project", str(REPO), "disk", "mark-good", *map(str, on), "--slot", "b"]) == 0
    assert capsys.readouterr().out == "slot b: good\n"
