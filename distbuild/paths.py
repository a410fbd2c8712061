"""Where distbuild keeps its caches and finds its project."""

from __future__ import annotations

import os
from pathlib import Path

from distbuild.core.errors import UsageError


def cache_dir() -> Path:
    base = os.environ.get("DISTBUILD_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "distbuild" if xdg else Path.home() / ".cache" / "distbuild"


def find_project(start: Path | None = None) -> Path:
    """The project directory: the nearest parent with ``recipes/`` and ``images/``."""
    env = os.environ.get("DISTBUILD_PROJECT")
    here = Path(env) if env else (start or Path.cwd())
    here = here.resolve()
    for p in (here, *here.parents):
        if (p / "recipes").is_dir() and (p / "images").is_dir():
            return p
    raise UsageError(
        f"no distbuild project at {here}",
        hint="run inside a checkout (a directory with recipes/ and images/) or pass --project",
    )
