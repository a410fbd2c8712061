"""Dependency resolution with apt for a foreign architecture.

apt runs against a private state directory (its own sources, lists and an
empty dpkg status), so the host's package state is never read or touched,
and it only computes what to install: nothing from the target is executed.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from pathlib import Path
from urllib.parse import quote, unquote

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from distbuild.core import ui
from distbuild.core.errors import CommandError, FetchError, MissingPackageError
from distbuild.core.run import run, which
from distbuild.rootfs.fetch import NetworkCounter
from distbuild.rootfs.lock import Lock, LockedPackage
from distbuild.rootfs.sources import Source, is_snapshot


class AptRoot:
    """A private apt configuration for one suite and architecture."""

    def __init__(self, cache: Path, suite: str, debian_arch: str, sources: list[Source]) -> None:
        key = hashlib.sha256("".join(s.deb822() for s in sources).encode()).hexdigest()[:12]
        self.dir = cache / "apt" / f"{suite}-{debian_arch}-{key}"
        self.arch = debian_arch
        self.sources = sources
        for sub in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "etc/apt/sources.list.d/distbuild.sources").write_text(
            "\n".join(s.deb822() for s in sources)
        )

    def _options(self) -> list[str]:
        d = self.dir
        opts = {
            "Dir": str(d),
            "Dir::State::status": str(d / "status"),
            "Dir::Etc::trusted": "/dev/null",
            "Dir::Etc::trustedparts": "/etc/apt/trusted.gpg.d",
            "Dir::Etc::preferencesparts": str(d / "etc/apt/preferences.d"),
            "Dir::Etc::parts": str(d / "etc/apt/apt.conf.d"),
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "Acquire::Languages": "none",
            "Acquire::Retries": "2",
            "Acquire::http::Timeout": "20",
            "Debug::NoLocking": "true",
        }
        if any(is_snapshot(s.uri) for s in self.sources):
            # A snapshot's Release is frozen in time: an expired Valid-Until is expected.
            opts["Acquire::Check-Valid-Until"] = "false"
        return [f"-o{k}={v}" for k, v in opts.items()]

    def _apt_get(self, *args: str, hint: str) -> str:
        which("apt-get", "apt")
        out = run(["apt-get", *self._options(), *args], capture=True, hint=hint)
        return out.stdout.decode(errors="replace")

    def _missing_indexes(self) -> list[Source]:
        lists = self.dir / "var/lib/apt/lists"
        return [s for s in self.sources if not any(lists.glob(f"*_dists_{s.suite}_*Packages*"))]

    def update(self) -> None:
        """Fetch the package indexes, retried since a mirror can be caught mid-sync.

        The release suite itself is required. An index of a supplementary
        suite (-updates, -security) that stays broken after the retries is
        left out with a warning, as apt itself does; the lock records the
        exact packages either way.
        """
        mirrors = ", ".join(sorted({s.uri for s in self.sources}))
        last_error: list[str] = []

        @retry(
            retry=retry_if_exception_type(FetchError),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=1, max=8),
            reraise=True,
        )
        def attempt() -> None:
            NetworkCounter.requests += 1
            which("apt-get", "apt")
            proc = run(["apt-get", *self._options(), "update", "-q"], capture=True, check=False)
            errors = [
                line
                for line in proc.stderr.decode(errors="replace").splitlines()
                if line.startswith(("E:", "W:"))
            ]
            last_error[:] = errors
            if proc.returncode != 0 or self._missing_indexes():
                raise FetchError("; ".join(errors) or "package indexes missing")

        ui.note(f"resolving: updating package indexes for {self.arch} from {mirrors}")
        try:
            attempt()
        except FetchError:
            missing = self._missing_indexes()
            detail = next(
                (e for e in last_error if "Failed to fetch" in e),
                last_error[-1] if last_error else "",
            )
            if any(s.suite == self.sources[0].suite for s in missing):
                raise FetchError(
                    f"could not fetch the package index for {self.arch} from {mirrors}: {detail}",
                    hint="check the network and the mirror (the host's apt sources, --mirror or "
                    "DISTBUILD_MIRROR); a mirror caught mid-sync heals within minutes, retry then",
                ) from None
            if not missing:
                ui.note(f"warning: {detail.removeprefix('E: ')}; using the indexes fetched before")
            for s in missing:
                self.sources = [x for x in self.sources if x != s]
                ui.note(
                    f"warning: {s.uri} {s.suite} has no usable index for {self.arch} "
                    f"({detail.removeprefix('E: ')}); building without it"
                )

    def resolve(self, packages: list[str]) -> dict[tuple[str, str], str]:
        """(name, version) → URL for the whole dependency closure of ``packages``."""
        try:
            out = self._apt_get("install", "--print-uris", "-qq", "-y", *packages, hint="")
        except CommandError as e:
            missing = re.findall(r"Unable to locate package (\S+)", e.stderr)
            if missing:
                raise MissingPackageError(missing[0], self.arch) from None
            raise FetchError(
                f"apt could not resolve the packages for {self.arch}: "
                + " ".join(e.stderr.strip().splitlines()[-3:]),
                hint="a package may not exist for this arch or has unmet dependencies",
            ) from None
        found = {}
        for line in out.splitlines():
            m = re.match(r"^'([^']+)' (\S+?)_(\S+)_(\S+)\.deb \d+ ", line)
            if m:
                found[(m.group(2), unquote(m.group(3)))] = m.group(1)
        return found

    def records(self, wanted: dict[tuple[str, str], str]) -> list[LockedPackage]:
        """The archive's records (pool path, size, sha256) of exact versions."""
        which("apt-cache", "apt")
        out = run(
            [
                "apt-cache",
                *self._options(),
                "show",
                "--no-all-versions",
                *[f"{n}={v}" for n, v in wanted],
            ],
            capture=True,
        ).stdout.decode(errors="replace")
        recs: dict[tuple[str, str], LockedPackage] = {}
        for para in out.split("\n\n"):
            fields = {}
            for line in para.splitlines():
                if line and line[0] not in " \t" and ":" in line:
                    k, _, v = line.partition(":")
                    fields[k] = v.strip()
            if "Package" not in fields:
                continue
            key = (fields["Package"], fields["Version"])
            recs[key] = LockedPackage(
                name=fields["Package"],
                version=fields["Version"],
                arch=fields["Architecture"],
                filename=fields["Filename"],
                size=int(fields["Size"]),
                sha256=fields["SHA256"],
                source=_mirror_root(wanted.get(key, ""), fields["Filename"]),
            )
        missing = [f"{n}={v}" for n, v in wanted if (n, v) not in recs]
        if missing:
            raise FetchError(f"apt has no archive record for {', '.join(missing)}")
        return [recs[k] for k in sorted(wanted)]


def _mirror_root(url: str, filename: str) -> str:
    """The archive root of a package URL: the URL without its pool path."""
    quoted = quote(filename, safe="/~")
    for tail in (filename, quoted, quoted.replace("%2B", "%2b")):
        if url.endswith(tail):
            return url[: -len(tail)].rstrip("/")
    return url.rsplit("/pool/", 1)[0]


def resolve_lock(
    cache: Path,
    image: str,
    arch: str,
    debian_arch: str,
    suite: str,
    sources: list[Source],
    packages: list[str],
) -> Lock:
    apt = AptRoot(cache, suite, debian_arch, sources)
    # apt runs without its own locking here; builds sharing a cache take turns.
    with (apt.dir / ".lock").open("w") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)
        apt.update()
        closure = apt.resolve(packages)
        locked = apt.records(closure)
    return Lock(image, arch, suite, tuple(sorted(packages)), tuple(locked))
