"""Bad inputs to the root/disk outputs and to ``distbuild boot``: a clear
``error:`` and ``hint:``, and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import error_and_hint, run_cli
from tests.support.disk import TINY, build, edit_recipe, nothing_written, project_copy


@pytest.mark.slow
@pytest.mark.network
def test_root_image_larger_than_its_slot(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_copy(tmp_path)
    (project / "images/tiny.yaml").write_text(TINY)
    edit_recipe(project, "amd64", {"disk.root_mib": 1})
    out = tmp_path / "out"
    assert build(project, out, "tiny") != 0
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "larger than its slot (1 MiB)" in error
    assert "disk.root_mib" in hint and "amd64.yaml" in hint
    assert nothing_written(out)


@pytest.mark.slow
@pytest.mark.network
def test_image_without_a_kernel(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_copy(tmp_path)
    toolbox = project / "images/toolbox.yaml"
    toolbox.write_text(toolbox.read_text().replace("outputs: [oci]", "outputs: [oci, root]"))
    out = tmp_path / "out"
    assert build(project, out, "toolbox") != 0
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "image toolbox has no kernel" in error
    assert "kernel: true" in hint
    assert nothing_written(out)


def test_unknown_boot_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = project_copy(tmp_path)
    edit_recipe(project, "arm64", {"boot.chain": "grub"})
    out = tmp_path / "out"
    assert build(project, out, "node", "arm64") != 0
    error, hint = error_and_hint(capsys.readouterr().err)
    assert "boot.chain" in error and "'grub'" in error
    assert "systemd-boot" in hint
    assert nothing_written(out)


def test_missing_firmware_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = project_copy(tmp_path)
    missing = "/usr/share/OVMF/OVMF_CODE_missing.fd"
    edit_recipe(project, "amd64", {"firmware.code": missing})
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    rc = run_cli("--project", project, "boot", disk, "--arch", "amd64", "--timeout", "5")
    assert rc != 0
    error, hint = error_and_hint(capsys.readouterr().err)
    assert f"firmware file {missing} not found" in error
    assert "apt-get install ovmf" in hint
    assert disk.read_bytes() == b"\0" * 4096
