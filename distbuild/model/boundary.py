"""Where a definition may read files: the project directory, plus what the user allows.

``include:``, ``overlay:`` and template includes name files relative to a
definition. They are resolved (symlinks followed, ``..`` applied) and must
then lie inside the project, or inside a path given with
``--allow-outside-project``; otherwise a definition from a pull request could
read the build host (``overlay: /root/.ssh``) into an image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from distbuild.core.errors import RecipeError


@dataclass(frozen=True)
class Boundary:
    """The resolved directories a definition may read from."""

    project: Path
    allowed: tuple[Path, ...] = ()

    @classmethod
    def of(cls, project: Path, allowed: Iterable[Path] = ()) -> Boundary:
        return cls(
            _real(project, "the project"),
            tuple(_real(p, "--allow-outside-project") for p in allowed),
        )

    def contains(self, path: Path) -> bool:
        """Whether the resolved ``path`` is the project, an allowed path, or beneath one."""
        return any(path == root or root in path.parents for root in (self.project, *self.allowed))

    def resolve(self, base: Path, name: str, what: str) -> Path:
        """``name`` (relative to ``base``) resolved; a ValueError says why it is refused."""
        if "\0" in name:
            raise ValueError(f"{what} {name!r} contains a NUL character")
        try:
            path = (base / name).resolve()
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{what} {name!r} cannot be resolved: {e}") from None
        if not self.contains(path):
            raise ValueError(f"{what} {name!r} lies outside the project (it resolves to {path})")
        return path


def _real(path: Path, what: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise RecipeError(f"{what} {path}: {e}", hint="give an existing directory") from None


OUTSIDE_HINT = (
    "definitions may read only files inside the project directory (after following symlinks);"
    " to use this path on purpose, pass --allow-outside-project PATH"
)
