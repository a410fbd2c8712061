"""The one door through which distbuild starts processes.

Every command is an argv list, echoed as ``+ argv`` with ``-v``, run with a
scrubbed environment, and a failure becomes a :class:`CommandError` with the
command, exit code and the tail of stderr.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from distbuild.core import ui
from distbuild.core.errors import CommandError, DistbuildError

# Variables a child may inherit; everything else is dropped so builds do not
# depend on the caller's shell. SOURCE_DATE_EPOCH is dropped too: tools
# disagree on it (mksquashfs refuses it beside -all-time, mtools and mke2fs
# stamp it), so a caller passes the build's epoch in ``env`` to the tools that
# want it, and a build from the environment's epoch runs every tool exactly
# like one from --source-date-epoch.
_KEEP = ("PATH", "HOME", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")
# Tools that fail when SOURCE_DATE_EPOCH is set beside their own time options;
# they never get it, whoever passes it.
_NO_EPOCH_ENV = ("mksquashfs",)


def tool_env(argv: Sequence[str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of one command: :func:`clean_env`, minus what the tool refuses."""
    env = clean_env(extra)
    if os.path.basename(argv[0]) in _NO_EPOCH_ENV:
        env.pop("SOURCE_DATE_EPOCH", None)
    return env


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["TZ"] = "UTC"
    if extra:
        env.update(extra)
    return env


def which(tool: str, package: str | None = None) -> str:
    """The path of a host tool, or an error naming the Debian package to install."""
    path = shutil.which(tool, path=clean_env()["PATH"])
    if path is None:
        raise DistbuildError(
            f"host tool {tool!r} not found",
            hint=f"install it: apt-get install {package or tool}",
        )
    return path


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = False,
    input: bytes | None = None,
    stdout: int | IO[bytes] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; raise CommandError if it fails and ``check`` is set."""
    args = [os.fspath(a) for a in argv]
    ui.debug("+ " + shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=tool_env(args, env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise DistbuildError(
            f"host tool {args[0]!r} not found", hint=hint or "install it with apt-get"
        ) from None
    except subprocess.TimeoutExpired as e:
        raise CommandError(args, -1, f"timed out after {timeout}s", hint=hint) from e
    stderr = proc.stderr.decode(errors="replace") if proc.stderr else ""
    if ui.verbose() > 1 and stderr:
        ui.debug(stderr.rstrip())
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, stderr, hint=hint)
    return proc


def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[bytes] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running command (a qemu guest, a pipeline stage)."""
    args = [os.fspath(a) for a in argv]
    ui.debug("+ " + shlex.join(args))
    try:
        return subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=stderr, env=tool_env(args, env), cwd=cwd
        )
    except FileNotFoundError:
        raise DistbuildError(
            f"host tool {args[0]!r} not found", hint="install it with apt-get"
        ) from None
