"""Options and helpers shared by the click commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from distbuild.cli.options import print_json
from distbuild.paths import find_project

__all__ = ["State", "echo_err", "pass_state", "print_json"]


class State:
    """What the top-level options set for every subcommand."""

    def __init__(self, project: Path | None) -> None:
        self._project = project

    @property
    def project(self) -> Path:
        return find_project(self._project)


pass_state = click.make_pass_decorator(State)


def echo_err(message: str) -> None:
    click.echo(message, file=sys.stderr)
