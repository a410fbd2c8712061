"""Provisioning files on the build host: onto a disk image's boot partition, and refused
before anything is written or built.

The disk is a GPT image laid out as distbuild's (a FAT ``esp``, ``root-a``,
``root-b``, ``data``), made with the same tools; the file is read back with
mtools and applied by the node's own ``distbuild-update provision`` into a
temporary root, as a node would on its next boot.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distbuild.core.bootctl.base import ImageFiles
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_offsets
from distbuild.node.cli import main as node_main
from distbuild.node.provision_apply import BAKED
from tests.conftest import REPO, assert_clean_error, distbuild_process, image_args, run_cli
from tests.support.ssh import ed25519_key

KEY = ed25519_key()
MIB = 1 << 20
GOOD = f"""instance-id: lab-1
hostname: lab-1
ssh_authorized_keys:
  - {KEY}
write_files:
  - path: /etc/distbuild/health.d/motd
    permissions: '0755'
    content: |
      #!/bin/sh
      true
"""

pytestmark = pytest.mark.skipif(
    not (shutil.which("sgdisk") and shutil.which("mcopy") and shutil.which("mkfs.vfat")),
    reason="needs gdisk, mtools and dosfstools",
)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(80 * MIB)
    run(
        [
            "sgdisk",
            "--clear",
            "--new=1:2048:+40M",
            "--change-name=1:esp",
            "--typecode=1:ef00",
            "--new=2:0:+8M",
            "--change-name=2:root-a",
            "--new=3:0:+8M",
            "--change-name=3:root-b",
            "--new=4:0:0",
            "--change-name=4:data",
            path,
        ],
        capture=True,
    )
    offset, size = partition_offsets(path)["esp"]
    fat = tmp_path / "esp.img"
    with fat.open("wb") as f:
        f.truncate(size)
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", fat], capture=True)
    with fat.open("rb") as src, path.open("r+b") as dest:
        dest.seek(offset)
        dest.write(src.read())
    return path


def esp(disk: Path) -> ImageFiles:
    return ImageFiles(disk, partition_offsets(disk)["esp"][0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_written_onto_the_boot_partition_and_applied_by_the_node(
    disk: Path, tmp_path: Path
) -> None:
    good = tmp_path / "node.yaml"
    good.write_text(GOOD)
    proc = distbuild_process("disk", "provision", disk, good)
    assert proc.returncode == 0, proc.stderr
    assert esp(disk).read("distbuild-provision.yaml") == GOOD.encode()

    # What the node reads from the boot partition on its next boot.
    boot = tmp_path / "boot"
    boot.mkdir()
    run(
        ["mcopy", "-i", f"{disk}@@{partition_offsets(disk)['esp'][0]}", "::/*", boot],
        capture=True,
        env={"MTOOLS_SKIP_CHECK": "1"},
    )
    root = tmp_path / "root"
    (root / "etc/distbuild").mkdir(parents=True)
    assert node_main(["--root", str(root), "provision", "--from", str(boot)]) == 0
    assert (root / "etc/hostname").read_text() == "lab-1\n"
    assert (root / "etc/distbuild/ssh/root/authorized_keys").read_text() == KEY + "\n"
    assert (root / "etc/distbuild/health.d/motd").stat().st_mode & 0o777 == 0o755

    # NoCloud user-data replaces the other form (the node refuses both at once).
    user_data = tmp_path / "user-data"
    user_data.write_text(f"#cloud-config\nhostname: lab-2\nssh_authorized_keys: ['{KEY}']\n")
    assert distbuild_process("disk", "provision", disk, user_data).returncode == 0
    assert esp(disk).read("distbuild-provision.yaml") is None
    assert esp(disk).read("user-data") == user_data.read_bytes()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("hostname: a\nruncmd: [reboot]\n", "runcmd is not supported"),
        ("hostname: a\ncolour: blue\n", "unknown key 'colour'"),
        ("hostname: [a\n", "must end with ']'"),
        ("ssh_authorized_keys: ['ssh-dss AAAAB3NzaC1kc3MAAACBAP']\n", "cannot be used"),
        ("write_files:\n  - path: /etc/../../root/x\n", "is not allowed"),
    ],
)
def test_a_bad_file_is_refused_and_nothing_is_written(
    disk: Path, tmp_path: Path, text: str, needle: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    before = digest(disk)
    assert_clean_error(distbuild_process("disk", "provision", disk, bad), needle)
    assert digest(disk) == before

    out = tmp_path / "out"
    proc = distbuild_process(
        "--project", REPO, "image", "--arch", "amd64", "--out", out, "--provision", bad
    )
    assert_clean_error(proc, needle)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.network
def test_image_provision_is_baked_into_the_root(project: Path, tmp_path: Path) -> None:
    """``distbuild image --provision``: the checked file is in the root image, the node's last source."""
    baked = tmp_path / "fleet.yaml"
    baked.write_text("instance-id: fleet-1\nhostname: fleet-node\n")
    out = tmp_path / "out"
    args = image_args(project, out, "node", "amd64", extra=["--provision", str(baked)])
    assert run_cli(*args) == 0
    root = out / "node/1.0.0/amd64/root/root.img"
    proc = run(["unsquashfs", "-cat", root, BAKED.lstrip("/")], capture=True)
    assert proc.stdout == baked.read_bytes()
    listing = run(["unsquashfs", "-ll", root, "root/.ssh"], capture=True).stdout.decode()
    assert "root/.ssh -> /etc/distbuild/ssh/root" in listing
