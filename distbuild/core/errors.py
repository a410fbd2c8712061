"""The error types of distbuild.

Library code raises these; only the CLI turns them into ``error: …`` and
``hint: …`` lines and an exit code.
"""

from __future__ import annotations


class DistbuildError(Exception):
    """A failure the user can act on: what went wrong and what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(DistbuildError):
    """The command line asked for something that does not exist."""

    exit_code = 2


class RecipeError(DistbuildError):
    """A recipe, image or channel definition is invalid.

    ``where`` is ``file:line`` and ``key`` the dotted key path, when known.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        where: str | None = None,
        key: str | None = None,
    ) -> None:
        prefix = ""
        if where:
            prefix += f"{where}: "
        if key:
            prefix += f"{key}: "
        super().__init__(prefix + message, hint)
        self.where = where
        self.key = key


class MissingPackageError(RecipeError):
    """A package an image asks for is not in the archive for the arch."""

    def __init__(
        self, package: str, debian_arch: str, where: str | None = None, key: str | None = None
    ) -> None:
        super().__init__(
            f"package {package!r} is not in the archive for {debian_arch}",
            hint="check the name with 'apt-cache search', or move it to a per-arch override",
            where=where,
            key=key,
        )
        self.package = package
        self.debian_arch = debian_arch


class CommandError(DistbuildError):
    """An external command failed."""

    exit_code = 4

    def __init__(
        self, argv: list[str], returncode: int, stderr: str, hint: str | None = None
    ) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        message = f"command failed with exit code {returncode}: {argv[0]}"
        if tail:
            message += "\n" + tail
        super().__init__(message, hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class FetchError(DistbuildError):
    """Something could not be downloaded or did not match its expected hash."""

    exit_code = 5


class LockError(DistbuildError):
    """A lock file is missing, stale, or a package does not match it."""

    exit_code = 6


class RegistryError(DistbuildError):
    """An OCI registry refused or failed a request."""

    exit_code = 7


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: unwinds like KeyboardInterrupt, so ``finally`` cleans up.

    A BaseException, so no ``except Exception`` swallows it on the way out.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
