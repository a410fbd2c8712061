"""The ``distbuild`` command: parse, call the core, print, exit codes.

Only this module turns errors into ``error: …`` / ``hint: …`` lines and exit
codes; library code raises.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from distbuild import __version__
from distbuild.cli import build as build_cmds
from distbuild.cli import channel as channel_cmds
from distbuild.cli import disk as disk_cmds
from distbuild.cli import docker as docker_cmds
from distbuild.cli import netboot as netboot_cmds
from distbuild.cli import options
from distbuild.cli import registry as registry_cmds
from distbuild.cli import sign as sign_cmds
from distbuild.cli.common import State
from distbuild.core import ui
from distbuild.core.errors import DistbuildError, Interrupted


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distbuild")
@click.option("-v", "--verbose", count=True, help="Show each command run (-vv: and its stderr).")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DISTBUILD_PROJECT",
    help="The project directory (with recipes/ and images/). Default: the current one.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, project: Path | None) -> None:
    """Build multi-arch container and A/B OS images, publish and update them."""
    ui.set_verbosity(verbose, quiet)
    ctx.obj = State(project)


# Every area's commands, imported by name: a module missing is an error, not a lost command.
for area in (
    build_cmds,
    registry_cmds,
    disk_cmds,
    channel_cmds,
    docker_cmds,
    sign_cmds,
    netboot_cmds,
):
    for command in area.COMMANDS:
        cli.add_command(command)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Later signals wait until the first one's clean-up has run (SIGKILL still
    # stops it; the next build reaps what it leaves, see distbuild.scratch).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_Handler = Callable[[int, FrameType | None], Any] | int | None


def _catch_signals() -> list[_Handler]:
    """SIGTERM (timeout, CI runners, systemd) and SIGINT unwind the main thread.

    Returns the handlers they had, for :func:`_restore_signals`.
    """
    before = [signal.getsignal(s) for s in _SIGNALS]
    if threading.current_thread() is threading.main_thread():
        for signum, handler in zip(_SIGNALS, before, strict=True):
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _interrupt)
    return before


def _restore_signals(before: list[_Handler]) -> None:
    if threading.current_thread() is threading.main_thread():
        for signum, handler in zip(_SIGNALS, before, strict=True):
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    before = _catch_signals()
    try:
        return _main(argv)
    finally:
        _restore_signals(before)


def _main(argv: list[str] | None) -> int:
    try:
        args = sys.argv[1:] if argv is None else argv
        options.check_argv(args)
        cli.main(args=args, prog_name="distbuild", standalone_mode=False)
    except Interrupted as e:
        click.echo("error: interrupted", file=sys.stderr)
        return 128 + e.signum
    except DistbuildError as e:
        click.echo(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            click.echo(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("error: aborted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", file=sys.stderr)
        ctx = getattr(e, "ctx", None)
        cmd = ctx.command_path if ctx is not None else "distbuild"
        click.echo(f"hint: see '{cmd} --help'", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            return _internal(e)
        # A path given on the command line that no file system can hold (pathlib's
        # exists()/is_file() raise for it): the user's to fix, whichever command met it.
        name = os.fsdecode(e.filename) if e.filename is not None else "a path"
        shown = name if len(name) <= 80 else name[:80] + "..."
        click.echo(f"error: {shown}: the name is too long", file=sys.stderr)
        click.echo(
            "hint: each part of a path is at most 255 bytes, the whole at most 4096",
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # a bug, not a user mistake
        return _internal(e)
    return 0


def _internal(e: Exception) -> int:
    click.echo(f"error: internal error: {e.__class__.__name__}: {e}", file=sys.stderr)
    click.echo(
        "hint: this is a bug in distbuild; run with -v for the traceback and report it",
        file=sys.stderr,
    )
    if ui.verbose():
        traceback.print_exc()
    return 70


if __name__ == "__main__":
    sys.exit(main())
