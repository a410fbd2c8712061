"""Options and helpers shared by the click commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from distbuild.paths import find_project


class State:
    """What the top-level options set for every subcommand."""

    def __init__(self, project: Path | None) -> None:
        self._project = project

    @property
    def project(self) -> Path:
        return find_project(self._project)


pass_state = click.make_pass_decorator(State)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def echo_err(message: str) -> None:
    click.echo(message, file=sys.stderr)
