"""The docker-archive conversion and platform choice, on a small hand-made build."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from distbuild.core.arch import ARCHES, Platform, host_arch
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.oci import layout as oci
from distbuild.oci.docker import check_tag, default_tag, docker_archive, select
from distbuild.record import BuildRecord

CREATED = "2025-11-27T00:00:00Z"


def layer_for(arch: str) -> tuple[bytes, str]:
    """A gzip layer holding /etc/arch, and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = arch.encode() * 400
        info = tarfile.TarInfo("etc/arch")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def make_build(root: Path, arches: list[str], version: str = "1.0.0") -> Path:
    directory = root / "toolbox" / version
    layout = oci.Layout(directory / "oci").init()
    manifests = []
    for name in arches:
        arch = ARCHES[name]
        blob, diff_id = layer_for(name)
        layer = layout.put(oci.LAYER_GZIP, blob)
        config = oci.image_config(arch.platform, [diff_id], CREATED, {"Cmd": ["/bin/sh"]}, "test")
        config_desc = layout.put(oci.CONFIG, oci.canonical(config))
        manifest = oci.image_manifest(config_desc, [layer], {})
        desc = layout.put(oci.MANIFEST, oci.canonical(manifest))
        desc["platform"] = arch.platform.as_oci()
        manifests.append(desc)
    index = oci.write_index(layout, manifests, {}, version)
    record = BuildRecord(
        "toolbox",
        version,
        1764201600,
        oci={"layout": "oci", "ref": version, "index": index["digest"]},
    )
    record.write(directory)
    return directory


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path, ["armv7", "arm64", "amd64"])


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/arm64/v8", "linux/arm64"),
        ("aarch64", "linux/arm64"),
        ("linux/x86_64", "linux/amd64"),
    ],
)
def test_select_normalises_platforms(build: Path, asked: str, expected: str) -> None:
    _, layout, selected = select(build, asked)
    assert str(selected.platform) == expected
    config = layout.read_json(selected.config["digest"])
    want = Platform.parse(expected)
    assert (config["architecture"], config.get("variant")) == (want.architecture, want.variant)


def test_select_lists_what_the_build_has(tmp_path: Path) -> None:
    build = make_build(tmp_path, ["armv7", "arm64"])
    with pytest.raises(UsageError) as e:
        select(build, "linux/arm/v6")
    assert "no image for linux/arm/v6" in e.value.message
    assert e.value.hint is not None
    assert "linux/arm/v7, linux/arm64" in e.value.hint


def test_archive_is_what_docker_load_reads(build: Path) -> None:
    _, layout, selected = select(build, "linux/arm64")
    size, chunks = docker_archive(layout, selected, ["distbuild/toolbox:1.0.0-arm64"], mtime=7)
    data = b"".join(chunks)
    assert len(data) == size
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert len(manifest) == 1
        entry = manifest[0]
        assert entry["RepoTags"] == ["distbuild/toolbox:1.0.0-arm64"]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert "sha256:" + hashlib.sha256(config).hexdigest() == selected.config["digest"]
        (layer_name,) = entry["Layers"]
        layer = tar.extractfile(layer_name).read()  # type: ignore[union-attr]
        # The layer's uncompressed bytes are what the config's diff ID names.
        diff_id = json.loads(config)["rootfs"]["diff_ids"][0]
        assert "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() == diff_id
        assert all(m.mtime == 7 for m in tar.getmembers())


def test_archive_refuses_a_damaged_layout(build: Path) -> None:
    _, layout, selected = select(build, "linux/amd64")
    blob = layout.blob_path(selected.layers[0]["digest"])
    blob.write_bytes(blob.read_bytes()[:-1])
    with pytest.raises(DistbuildError, match="bytes, the manifest says"):
        docker_archive(layout, selected, ["t/t:t"])
    blob.unlink()
    with pytest.raises(DistbuildError, match="is missing"):
        docker_archive(layout, selected, ["t/t:t"])


def test_archive_refuses_layers_docker_cannot_unpack(build: Path) -> None:
    _, layout, selected = select(build, "linux/amd64")
    selected.layers[0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    with pytest.raises(DistbuildError, match="Docker cannot load"):
        docker_archive(layout, selected, ["t/t:t"])


def test_default_tag_marks_foreign_arches(tmp_path: Path) -> None:
    build = make_build(tmp_path, ["armv7", "arm64", "amd64"], version="1.0+rc1")
    host = host_arch()
    for arch in ARCHES.values():
        record, _, selected = select(build, str(arch.platform))
        suffix = "" if arch == host else f"-{arch.name}"
        # '+' is not allowed in a Docker tag.
        assert default_tag(record, selected) == f"distbuild/toolbox:1.0_rc1{suffix}"


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("name", "name:latest"),
        ("distbuild/toolbox:dev", "distbuild/toolbox:dev"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        ("localhost:5000/a/b:v1.2", "localhost:5000/a/b:v1.2"),
    ],
)
def test_check_tag(tag: str, expected: str) -> None:
    assert check_tag(tag) == expected


@pytest.mark.parametrize("tag", ["Upper:x", "a/b:bad tag", "a/b@sha256:" + "0" * 64, "a//b:x"])
def test_check_tag_refuses(tag: str) -> None:
    with pytest.raises(UsageError):
        check_tag(tag)
