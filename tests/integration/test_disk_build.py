"""The root and disk outputs without booting: layout, verity, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distbuild.core.bootctl.base import ImageFiles
from distbuild.disk.diskimg import partition_offsets
from distbuild.disk.rootimg import Verity, verify
from tests.conftest import read_record
from tests.support.disk import TINY, build, project_copy

pytestmark = [pytest.mark.slow, pytest.mark.network]


def test_tiny_image_root_and_disk_are_reproducible_and_verified(
    tmp_path: Path, cache_dir: Path
) -> None:
    project = project_copy(tmp_path)
    (project / "images/tiny.yaml").write_text(TINY)
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        assert build(project, out, "tiny") == 0
    records = [read_record(out / "tiny" / "1.0.0") for out in outs]
    digests = [
        {(a["arch"], a["kind"]): a["sha256"] for a in r["artifacts"] if a["kind"] != "sbom"}
        for r in records
    ]
    assert digests[0] == digests[1]  # same lock and epoch: same bytes, disk included
    base = outs[0] / "tiny" / "1.0.0"
    art = {a["kind"]: base / a["path"] for a in records[0]["artifacts"]}
    assert {"root", "kernel", "initrd", "boot", "disk", "disk-bmap"} <= set(art)

    meta = json.loads(art["boot"].read_text())
    v = meta["verity"]
    verity = Verity(v["roothash"], v["salt"], v["data_blocks"])
    assert verify(art["root"], verity)
    assert f"distbuild.verity={verity.roothash}" in meta["cmdline"].split()
    assert "distbuild.slot=" not in meta["cmdline"]

    disk = art["disk"]
    parts = partition_offsets(disk)
    assert list(parts) == ["esp", "root-a", "root-b", "data"]
    # root-a holds the root image byte for byte; root-b is empty.
    offset, _ = parts["root-a"]
    with disk.open("rb") as f:
        f.seek(offset)
        assert f.read(art["root"].stat().st_size) == art["root"].read_bytes()
        f.seek(parts["root-b"][0])
        assert f.read(1 << 20) == bytes(1 << 20)
    assert disk.stat().st_blocks * 512 < disk.stat().st_size // 2  # sparse
    assert "<bmap" in art["disk-bmap"].read_text()
    # The ESP: systemd-boot at the removable path, slot a good with its files.
    esp = ImageFiles(disk, parts["esp"][0])
    assert esp.read("EFI/BOOT/BOOTX64.EFI") is not None
    assert esp.list("loader/entries") == ["distbuild-1-a.conf"]
    assert esp.read("distbuild/a/linux") == art["kernel"].read_bytes()
    assert esp.read("distbuild/a/initrd") == art["initrd"].read_bytes()
