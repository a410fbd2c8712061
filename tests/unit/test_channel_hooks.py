"""The publish pipeline's extension points: extra target sources and release hooks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distbuild.channel import hooks
from distbuild.channel.hooks import NewTarget, ReleaseEvent
from distbuild.channel.publish import promote, publish, record_targets
from distbuild.channel.repo import ChannelRepo, Update
from distbuild.core.errors import DistbuildError
from distbuild.record import BuildRecord
from tests.support.channel import EXPIRY, channel, make_build, make_keys


def sboms(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
    """An SBOM per arch, written next to each lock file, as a later stage would."""
    for t in record_targets(record, directory):
        if t.kind == "lock":
            sbom = t.source.with_name("sbom.spdx.json")
            sbom.write_text(f'{{"arch": "{t.arch}"}}\n')
            yield t.sibling(sbom, kind="sbom")


def test_registered_source_adds_targets_and_hooks_see_releases(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    events: list[ReleaseEvent] = []
    hooks.target_source(sboms)
    hooks.after_release(events.append)
    try:
        build = make_build(tmp_path / "b", "node", "1", arches=("armv7",))
        outcome = publish(repo, channel("beta"), build, keys)
        promote(repo, channel("beta"), channel("stable"), "1", keys)
    finally:
        hooks.TARGET_SOURCES.remove(sboms)
        hooks.RELEASE_HOOKS.remove(events.append)

    assert "node/1/armv7/sbom.spdx.json" in outcome.targets
    with Update(ChannelRepo(repo, "stable"), keys, EXPIRY) as update:
        sbom = update.get("node/1/armv7/sbom.spdx.json")
    assert sbom is not None
    assert sbom.custom == {"image": "node", "version": "1", "arch": "armv7", "kind": "sbom"}

    published, promoted = events
    assert (published.action, published.channel.registry_tag, published.version) == (
        "publish",
        "beta",
        "1",
    )
    assert published.record is not None and published.record.image == "node"
    assert (promoted.action, promoted.channel.name, promoted.source_channel) == (
        "promote",
        "stable",
        "beta",
    )
    assert set(promoted.targets) == set(outcome.targets)


def test_a_source_naming_a_missing_file_publishes_nothing(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    build = make_build(tmp_path / "b", "node", "1", arches=("amd64",))

    def ghost(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
        for t in record_targets(record, directory):
            yield NewTarget(t.image, t.version, t.arch, "sbom", directory / "nope", "0" * 64, 1)

    with pytest.raises(DistbuildError, match="missing"):
        publish(tmp_path / "repo", channel("beta"), build, keys, sources=[record_targets, ghost])
    assert not (tmp_path / "repo" / "beta" / "metadata").exists()
