"""Extension points of the publish pipeline.

Two kinds of hooks, both registered at import time by the module that needs
them (e.g. a ``distbuild.cli.<area>`` module, which the CLI imports at start):

* **Target sources** add files of a build as targets: the build record's
  artifacts are one source; an SBOM writer or a Sigstore signer can add more::

      from distbuild.channel.hooks import NewTarget, target_source

      @target_source
      def bundles(record, directory):
          for t in record_targets(record, directory):
              bundle = t.source.with_name(t.source.name + ".sigstore.json")
              if bundle.is_file():
                  yield t.sibling(bundle, kind="sigstore-bundle")

* **Release hooks** run after a release landed in a channel (publish or
  promote), e.g. to move the channel's tag in an OCI registry::

      from distbuild.channel.hooks import after_release

      @after_release
      def tag(event):  # event.channel.registry_tag, event.image, event.version
          ...
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
    """A file to publish as target ``<image>/<version>/<arch>/<file>``."""

    image: str
    version: str
    arch: str
    kind: str
    source: Path
    sha256: str
    length: int
    file: str = ""  # the basename in the target name; default: the source's
    extra: Mapping[str, str] = field(default_factory=dict)  # more custom metadata

    @property
    def name(self) -> str:
        return self.file or self.source.name

    @property
    def path(self) -> str:
        return target_path(self.image, self.version, self.arch, self.name)

    @property
    def custom(self) -> dict[str, str]:
        """The target's custom metadata: image, version, arch, kind and extras."""
        return {
            **self.extra,
            "image": self.image,
            "version": self.version,
            "arch": self.arch,
            "kind": self.kind,
        }

    def sibling(self, source: Path, kind: str, file: str = "") -> NewTarget:
        """A target for another file of the same image, version and arch (hashed now)."""
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


ReleaseHook = Callable[[ReleaseEvent], None]

TARGET_SOURCES: list[TargetSource] = []
RELEASE_HOOKS: list[ReleaseHook] = []


def target_source(fn: TargetSource) -> TargetSource:
    """Register a source of extra targets for every publish (a decorator)."""
    if fn not in TARGET_SOURCES:
        TARGET_SOURCES.append(fn)
    return fn


def after_release(fn: ReleaseHook) -> ReleaseHook:
    """Register a function to call after each publish and promote (a decorator)."""
    if fn not in RELEASE_HOOKS:
        RELEASE_HOOKS.append(fn)
    return fn


def fire(event: ReleaseEvent) -> None:
    """Run the release hooks in registration order."""
    for hook in list(RELEASE_HOOKS):
        hook(event)
