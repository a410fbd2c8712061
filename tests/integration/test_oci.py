"""The OCI outputs, checked by outside tools: skopeo, umoci, and the ELF headers."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from distbuild.core.arch import ARCHES
from tests.conftest import Builder, image_args, read_record, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.network]


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


def elf_arch(path: Path) -> tuple[int, int]:
    """(ELF class, e_machine) of a binary."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return head[4], struct.unpack("<H", head[18:20])[0]


@pytest.mark.parametrize("arch", list(ARCHES))
def test_each_arch_passes_skopeo_and_umoci(arch: str, toolbox_all: Path, tmp_path: Path) -> None:
    a = ARCHES[arch]
    record = read_record(toolbox_all)
    layout = toolbox_all / record["oci"]["layout"]
    ref = f"oci:{layout}:{record['version']}"
    index = json.loads(skopeo("inspect", "--raw", ref))
    entry = next(
        m for m in index["manifests"] if m["platform"]["architecture"] == a.platform.architecture
    )
    assert entry["platform"] == a.platform.as_oci()  # armv7: arm + v7
    override = ["--override-arch", a.platform.architecture, "--override-os", "linux"]
    if a.platform.variant:
        override += ["--override-variant", a.platform.variant]
    config = json.loads(skopeo(*override, "inspect", "--config", ref))
    assert config["architecture"] == a.platform.architecture
    assert config.get("variant") == a.platform.variant
    assert config["os"] == "linux"
    info = json.loads(skopeo(*override, "inspect", ref))
    assert info["Digest"] == record["oci"]["index"]
    # umoci unpacks one manifest: point a one-entry layout copy at this arch's manifest.
    single = tmp_path / "layout"
    shutil.copytree(layout, single)
    (single / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [{**entry, "annotations": {"org.opencontainers.image.ref.name": "x"}}],
            }
        )
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{single}:x", str(bundle)], check=True, capture_output=True
    )
    busybox = bundle / "rootfs/usr/bin/busybox"
    assert elf_arch(busybox) == (a.elf_class, a.elf_machine)
    assert os.readlink(bundle / "rootfs/bin") == "usr/bin"
    assert (bundle / "rootfs/usr/bin/uname").is_symlink()
    assert (
        b"BEGIN CERTIFICATE" in (bundle / "rootfs/etc/ssl/certs/ca-certificates.crt").read_bytes()
    )
    status = (bundle / "rootfs/var/lib/dpkg/status").read_text()
    assert "Package: busybox\nStatus: install ok installed" in status


def test_all_is_one_index_with_three_manifests(toolbox_all: Path) -> None:
    record = read_record(toolbox_all)
    layout = toolbox_all / record["oci"]["layout"]
    top = json.loads((layout / "index.json").read_text())
    assert len(top["manifests"]) == 1
    index = json.loads((layout / "blobs/sha256" / record["oci"]["index"].split(":")[1]).read_text())
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in index["manifests"]] == [
        a.platform.as_oci() for a in ARCHES.values()
    ]
    # Tools find artifacts through the record: every path exists and matches its hash.
    for art in record["artifacts"]:
        assert (toolbox_all / art["path"]).stat().st_size == art["size"]
    assert {a["arch"] for a in record["artifacts"] if a["kind"] == "oci"} == set(ARCHES)


def _digests(build: Path) -> tuple[str, list[str]]:
    record = read_record(build)
    layout = build / record["oci"]["layout"]
    index = json.loads((layout / "blobs/sha256" / record["oci"]["index"].split(":")[1]).read_text())
    return record["oci"]["index"], [m["digest"] for m in index["manifests"]]


def test_reproducible_from_scratch(
    toolbox_all: Path,
    project: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same lock and epoch, another output dir and an empty layer cache: same digests."""
    fresh = tmp_path / "cache"
    fresh.mkdir()
    (fresh / "debs").symlink_to(cache_dir / "debs")  # the .debs, not the built layers
    monkeypatch.setenv("DISTBUILD_CACHE", str(fresh))
    out = tmp_path / "out"
    assert run_cli(*image_args(project, out, "toolbox", "all")) == 0
    assert not (fresh / "apt").exists(), "the locked build must not resolve again"
    assert _digests(out / "toolbox/1.0.0") == _digests(toolbox_all)


def test_matrix_merge_equals_all_build(
    toolbox_all: Path, build_image: Builder, tmp_path: Path
) -> None:
    """Three one-arch jobs merged as the CI merge job does give the --arch all index digest."""
    singles = [build_image("toolbox", arch) for arch in ARCHES]
    assert all(len(read_record(s)["oci"]) and len(_digests(s)[1]) == 1 for s in singles)
    out = tmp_path / "merged"
    assert run_cli("merge", *singles, "--out", out) == 0
    merged = out / "toolbox/1.0.0"
    assert _digests(merged) == _digests(toolbox_all)
    assert {a["kind"] for a in read_record(merged)["artifacts"]} >= {"oci", "oci-index", "lock"}


def test_merge_refuses_mismatched_builds(
    build_image: Builder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = build_image("toolbox", "amd64")
    b = build_image("toolbox", "armv7", version="2.0.0")
    assert run_cli("merge", a, b, "--out", tmp_path / "m") != 0
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err
    assert not (tmp_path / "m/toolbox").exists() or not any((tmp_path / "m/toolbox").iterdir())
