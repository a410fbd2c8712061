"""The installer initramfs's own archive: the root image, the loop module and the installer /init."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distbuild.disk.installer import ARCHIVE_ALIGN, concatenate, installer_archive
from distbuild.rootfs.install_updater import VENDOR_DIR


def test_archive_carries_the_root_image_and_runs_the_installer_in_it(tmp_path: Path) -> None:
    root = tmp_path / "root.img"
    root.write_bytes(b"hsqs" + bytes(range(256)) * 64)
    mods = tmp_path / "modules"
    (mods / "kernel/drivers/block").mkdir(parents=True)
    (mods / "kernel/drivers/block/loop.ko").write_bytes(b"\x7fELF loop")
    archive = installer_archive(root, mods, "6.1.0-1-amd64", ["kernel/drivers/block/loop.ko"], 0)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "root.img").read_bytes() == root.read_bytes()
    assert (out / "usr/lib/modules/6.1.0-1-amd64/kernel/drivers/block/loop.ko").exists()
    conf = (out / "etc/distbuild/installer.conf").read_text()
    assert conf == "INSTALLER_MODULES='kernel/drivers/block/loop.ko'\n"
    init = (out / "init").read_text()
    assert (out / "init").stat().st_mode & 0o111
    assert f"PYTHONPATH=/{VENDOR_DIR} /usr/bin/python3 -m distbuild.node.netinstall" in init
    assert 'mount -t "$FS" -o ro,loop /root.img /newroot' in init
    # The installer's exit decides: reboot only after a finished install.
    assert init.index("python3 -m distbuild.node.netinstall; then") < init.index("reboot -f")


def test_the_second_archive_starts_where_the_kernel_looks_for_it() -> None:
    # A compressed first archive of any length: the kernel reads the second
    # (uncompressed) one only at a multiple of 4 past the start.
    for first in (b"\x28\xb5\x2f\xfd" + bytes(9), bytes(ARCHIVE_ALIGN)):
        joined = concatenate(first, b"070701rest")
        start = joined.index(b"070701")
        assert start % 4 == 0 and start >= len(first)
        assert joined[: len(first)] == first and not any(joined[len(first) : start])
