"""The publish pipeline of ``distbuild publish`` and ``promote``, composed in one place.

:func:`release_pipeline` names what a publish turns into targets and what
runs after a release landed in a channel::

    sources: the build record's files, CI's Sigstore bundles
    steps:   the channel page, then (with a registry) the registry's tags and referrers

The CLI and library callers get the same pipeline from it; ``publish`` and
``promote`` run the one they are given (this one when given none). A new
kind of target (chunk indexes) or a new step after a commit is added here.
"""

from __future__ import annotations

from dataclasses import dataclass

from distbuild.channel.hooks import Pipeline, ReleaseEvent, ReleaseStep
from distbuild.channel.model import Channel
from distbuild.channel.page import page_step
from distbuild.channel.sources import bundle_targets, record_targets
from distbuild.core.errors import DistbuildError
from distbuild.oci.release import check_registry, promote_tag, release_build


def release_pipeline(channel: Channel, registry: str | None = None) -> Pipeline:
    """The pipeline for releases into ``channel``.

    ``registry`` (``HOST[:PORT]/NAMESPACE``, e.g. from ``--registry``) wins
    over the channel's ``registry:``; with neither, no registry is touched.
    """
    steps: list[ReleaseStep] = [page_step]
    chosen = check_registry(registry) if registry else channel.registry
    if chosen is not None:
        steps.append(RegistryStep(chosen))
    return Pipeline(sources=(record_targets, bundle_targets), steps=tuple(steps))


@dataclass(frozen=True)
class RegistryStep:
    """Tag the release in a registry: push and tag on publish, move the tag on promote."""

    registry: str  # HOST[:PORT]/NAMESPACE, checked

    def __call__(self, event: ReleaseEvent) -> None:
        tag = event.channel.registry_tag or event.channel.name
        try:
            if event.action == "publish" and event.record_dir is not None:
                release_build(event.record_dir, self.registry, tag)
            elif event.action == "promote":
                promote_tag(self.registry, event.image, event.version, tag)
        except DistbuildError as e:
            raise DistbuildError(
                f"{event.image} {event.version} is in channel {event.channel.name}, but the "
                f"registry {self.registry} was not updated: {e.message}",
                hint=(e.hint + "; then " if e.hint else "")
                + f"set the tag by hand: distbuild push BUILD {self.registry}/{event.image} "
                f"--tag {tag}",
            ) from None
