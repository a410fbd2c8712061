"""The netboot output built from the Debian archive: reproducible, what it names, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.netboot import pe
from tests.conftest import Builder, NodeChannels, image_args, read_record, run_cli
from tests.support.netboot import CHANNEL_URL, DEFINITION, IMAGE, build_netboot, channel_args

pytestmark = [pytest.mark.slow, pytest.mark.network]


def netboot_files(build: Path) -> dict[str, str]:
    return {
        a["path"]: a["sha256"]
        for a in read_record(build)["artifacts"]
        if a["kind"].startswith("netboot")
    }


@pytest.mark.parametrize("arch", ["amd64", "armv7"])
def test_netboot_output_is_reproducible_and_boots_its_channel(
    arch: str, project: Path, build_image: Builder, node_channels: NodeChannels, tmp_path: Path
) -> None:
    build = build_netboot(project, build_image, node_channels, arch)
    again = tmp_path / "again"
    args = image_args(project, again, IMAGE, arch, extra=channel_args(node_channels, arch))
    assert run_cli(*args) == 0
    files = netboot_files(build)
    assert files == netboot_files(again / IMAGE / "1.0.0")  # same inputs, same bytes
    record = read_record(build)
    kinds = {(a["kind"], a.get("board")) for a in record["artifacts"]}
    boards = {a.get("board") for a in record["artifacts"] if a["kind"].startswith("netboot")}
    assert "qemu" in boards
    words = f"distbuild.channel_url={CHANNEL_URL} distbuild.channel={node_channels.name(arch)}"
    if arch == "amd64":
        assert {k for k, _ in kinds} >= {"netboot-uki"}
        uki = (build / "amd64/netboot/qemu/installer.efi").read_bytes()
        h = pe.read_headers(uki)
        sections = {s.name: uki[s.raw_offset : s.raw_offset + s.virtual_size] for s in h.sections}
        cmdline = sections[".cmdline"].rstrip(b"\0").decode()
        assert words in cmdline and "distbuild.board=qemu" in cmdline
        assert f"distbuild.image={IMAGE}" in cmdline
        assert sections[".linux"][:2] == b"MZ" and sections[".initrd"][:2] == b"\x1f\x8b"
    else:
        assert {k for k, _ in kinds} >= {"netboot-kernel", "netboot-initrd", "netboot-script"}
        script = (build / "armv7/netboot/qemu/boot.scr.uimg").read_bytes()
        assert script[:4] == bytes.fromhex("27051956")  # a uImage
        assert (
            words.encode() in script and b"tftpboot ${kernel_addr_r} armv7/netboot/linux" in script
        )


def test_netboot_without_a_channel_is_refused_before_anything_is_fetched(
    project: Path, node_channels: NodeChannels, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (project / "images" / f"{IMAGE}.yaml").write_text(DEFINITION)
    out = tmp_path / "out"
    assert run_cli(*image_args(project, out, IMAGE, "amd64")) not in (0, 70)
    assert "netboot output" in capfd.readouterr().err
    root = str(node_channels.root_json("amd64"))
    for url in ("http://h/a b", "http://h/x\nconsole=ttyS1", 'http://h/"'):
        bad = ["--channel-url", url, "--trust-root", root]
        assert run_cli(*image_args(project, out, IMAGE, "amd64", extra=bad)) not in (0, 70)
        assert "kernel command line" in capfd.readouterr().err
    assert not any(p.is_file() for p in out.rglob("*"))
