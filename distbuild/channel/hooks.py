"""The parts of the publish pipeline: target sources and release steps.

* A **target source** turns a build into files to publish as targets: the
  build record's artifacts are one source, CI's Sigstore bundles another
  (``distbuild.channel.sources``); chunk indexes will be a third.
* A **release step** runs after a release landed in a channel (publish or
  promote): the channel page, the registry tags and referrers.

Nothing registers itself: :func:`distbuild.channel.pipeline.release_pipeline`
names every source and step of ``distbuild publish``/``promote`` in one place,
and ``publish``/``promote`` run the :class:`Pipeline` they are given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from distbuild.channel.model import Channel
from distbuild.core.releases import target_path
from distbuild.record import BuildRecord


@dataclass(frozen=True)
class NewTarget:
    """A file to publish as target ``<image>/<version>/<arch>/<file>``, or
    ``<image>/<version>/<arch>/<board>/<file>`` for a file made for one board."""

    image: str
    version: str
    arch: str
    kind: str
    source: Path
    sha256: str
    length: int
    file: str = ""  # the basename in the target name; default: the source's
    extra: Mapping[str, str] = field(default_factory=dict)  # more custom metadata
    board: str | None = None  # the board the file is made for (build record's ``board``)

    @property
    def name(self) -> str:
        return self.file or self.source.name

    @property
    def path(self) -> str:
        return target_path(self.image, self.version, self.arch, self.name, self.board)

    @property
    def custom(self) -> dict[str, str]:
        """The target's custom metadata: image, version, arch, kind, board (if any) and extras."""
        custom = {
            **self.extra,
            "image": self.image,
            "version": self.version,
            "arch": self.arch,
            "kind": self.kind,
        }
        if self.board is not None:
            custom["board"] = self.board
        return custom

    def sibling(self, source: Path, kind: str, file: str = "") -> NewTarget:
        """A target for another file of the same image, version, arch and board (hashed now)."""
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return replace(
            self,
            kind=kind,
            source=source,
            sha256=digest.hexdigest(),
            length=source.stat().st_size,
            file=file,
            extra={},
        )


TargetSource = Callable[[BuildRecord, Path], Iterable[NewTarget]]


@dataclass(frozen=True)
class ReleaseEvent:
    """A release has landed in a channel (its timestamp is written)."""

    action: Literal["publish", "promote"]
    repo: Path  # the repository root (holding one directory per channel)
    channel: Channel
    image: str
    version: str
    targets: tuple[str, ...]  # target names
    record: BuildRecord | None = None  # the build, when published from one
    record_dir: Path | None = None
    source_channel: str | None = None  # when promoted


ReleaseStep = Callable[[ReleaseEvent], None]


@dataclass(frozen=True)
class Pipeline:
    """What a publish turns into targets, and what runs after a release lands."""

    sources: tuple[TargetSource, ...]
    steps: tuple[ReleaseStep, ...] = ()

    def targets_only(self) -> Pipeline:
        """The same sources, no steps after the commit (e.g. for benchmarks)."""
        return replace(self, steps=())

    def after_release(self, event: ReleaseEvent) -> None:
        """Run the release steps in order."""
        for step in self.steps:
            step(event)
