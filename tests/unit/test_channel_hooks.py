"""The publish pipeline: the sources and steps it is given, and only those, run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from distbuild.channel.hooks import NewTarget, Pipeline, ReleaseEvent
from distbuild.channel.page import PAGE, page_step
from distbuild.channel.pipeline import RegistryStep, release_pipeline
from distbuild.channel.publish import promote, publish
from distbuild.channel.repo import ChannelRepo, Update
from distbuild.channel.sources import bundle_targets, record_targets
from distbuild.core.errors import DistbuildError
from distbuild.record import BuildRecord, load_record
from tests.conftest import REPO, run_cli
from tests.support.channel import EXPIRY, channel, make_build, make_keys
from tests.support.channel import _artifact as channel_artifact


def sboms(record: BuildRecord, directory: Path) -> Iterator[NewTarget]:
    """An SBOM per arch, written next to each lock file, as a later stage would."""
    for t in record_targets(record, directory):
        if t.kind == "lock":
            sbom = t.source.with_name("sbom.spdx.json")
            sbom.write_text(f'{{"arch": "{t.arch}"}}\n')
            yield t.sibling(sbom, kind="sbom")


def test_a_pipelines_sources_add_targets_and_its_steps_see_releases(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    events: list[ReleaseEvent] = []
    pipeline = Pipeline(sources=(record_targets, sboms), steps=(events.append,))
    build = make_build(tmp_path / "b", "node", "1", arches=("armv7",))
    outcome = publish(repo, channel("beta"), build, keys, pipeline=pipeline)
    promote(repo, channel("beta"), channel("stable"), "1", keys, pipeline=pipeline)

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
        publish(
            tmp_path / "repo",
            channel("beta"),
            build,
            keys,
            pipeline=Pipeline((record_targets, ghost)),
        )
    assert not (tmp_path / "repo" / "beta" / "metadata").exists()


def test_release_pipeline_names_every_source_and_step(tmp_path: Path) -> None:
    """What 'distbuild publish' runs is composed in one place, whatever was imported."""
    plain = release_pipeline(channel("beta"))
    assert plain.sources == (record_targets, bundle_targets)
    assert plain.steps == (page_step,)
    from_yaml = release_pipeline(replace(channel("beta"), registry="127.0.0.1:5000/ns"))
    assert from_yaml.steps == (page_step, RegistryStep("127.0.0.1:5000/ns"))
    given = release_pipeline(replace(channel("beta"), registry="127.0.0.1:5000/ns"), "[::1]:80/x/")
    assert given.steps == (page_step, RegistryStep("[::1]:80/x"))
    with pytest.raises(DistbuildError, match="invalid registry"):
        release_pipeline(channel("beta"), "no registry here")


def test_library_publish_runs_the_release_pipeline(tmp_path: Path) -> None:
    """A bare publish() writes the page, as 'distbuild publish' does; targets_only() does not."""
    keys = make_keys(tmp_path / "keys")
    repo = tmp_path / "repo"
    publish(repo, channel("beta"), make_build(tmp_path / "b", "node", "1"), keys)
    assert "node" in (repo / "beta" / PAGE).read_text()
    quiet = release_pipeline(channel("alpha")).targets_only()
    publish(repo, channel("alpha"), make_build(tmp_path / "b", "node", "1"), keys, pipeline=quiet)
    assert not (repo / "alpha" / PAGE).exists()


def test_a_bad_registry_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = make_keys(tmp_path / "keys")
    build = make_build(tmp_path / "b", "node", "1", arches=("amd64",))
    repo = tmp_path / "repo"
    args = ("--project", REPO, "publish", build, "--channel", "beta", "--repo", repo)
    rc = run_cli(*args, "--keys", keys.path, "--registry", "127.0.0.1:0/ns")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error: invalid registry '127.0.0.1:0/ns'" in err and "hint: write HOST" in err
    assert not repo.exists()


def test_the_netboot_output_is_not_published(tmp_path: Path) -> None:
    """Firmware fetches it from ``distbuild netboot``'s directory; nodes never
    fetch it through TUF, and armv7's netboot kernel and initramfs have the
    root output's file names (two targets of one name: publish refused)."""
    directory = make_build(tmp_path, "node", "1.0.0", arches=("armv7",))
    path = directory / "build.json"
    record = json.loads(path.read_text())
    netboot = directory / "armv7" / "netboot" / "root.img"  # the root payload's file name
    netboot.parent.mkdir()
    netboot.write_bytes(b"installer initramfs")
    record["artifacts"].append(channel_artifact(directory, "armv7", "netboot-initrd", netboot))
    path.write_text(json.dumps(record))
    names = [t.kind for t in record_targets(*load_record(directory))]
    assert "root" in names and not [k for k in names if k.startswith("netboot")]
    repo, keys = tmp_path / "repo", make_keys(tmp_path / "keys")
    publish(repo, channel("stable"), directory, keys)
