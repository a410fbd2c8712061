"""The installer UKI: sections appended to systemd's real EFI stubs (x86_64, aarch64),
read back, checked by objdump, reproducible; hostile command-line values refused."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.errors import DistbuildError
from distbuild.model.recipe import load_recipe
from distbuild.netboot import pe
from distbuild.netboot.output import board_cmdline, uboot_script
from distbuild.netboot.uki import build_uki, check_url, installer_cmdline, os_release
from distbuild.rootfs.install_updater import UpdaterSetup
from tests.conftest import REPO

TREES = Path.home() / ".cache/distbuild/trees"
STUBS = {"amd64": "linuxx64.efi.stub", "arm64": "linuxaa64.efi.stub"}


def stub(arch: str) -> bytes:
    """The stub from the boot lock's unpacked systemd-boot-efi (target arch, never the host's)."""
    found = sorted(TREES.glob(f"boot-{arch}-*/usr/lib/systemd/boot/efi/{STUBS[arch]}"))
    if not found:
        pytest.skip(f"no unpacked {arch} boot tree in the cache (build a {arch} disk once)")
    return found[0].read_bytes()


def make(arch: str, kernel: bytes = b"K" * 70001, initrd: bytes = b"I" * 5000) -> bytes:
    cmd = installer_cmdline("http://10.0.2.2:8080/ch", "stable", "node", "qemu", ("ttyS0",))
    return build_uki(stub(arch), arch, kernel, initrd, cmd, os_release("node", "1.0"))


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_sections_are_appended_aligned_and_the_headers_follow(arch: str) -> None:
    original = pe.read_headers(stub(arch))
    kernel, initrd = bytes(range(256)) * 300, b"\x1f\x8b" + b"x" * 4097
    image = make(arch, kernel, initrd)
    h = pe.read_headers(image)
    assert h.machine == {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    assert h.sections[: len(original.sections)] == original.sections
    new = {s.name: s for s in h.sections[len(original.sections) :]}
    assert list(new) == [".osrel", ".cmdline", ".initrd", ".linux"]
    end = max(s.virtual_address + s.virtual_size for s in original.sections)
    for s in new.values():
        assert s.virtual_address % h.section_alignment == 0 and s.virtual_address >= end
        assert s.raw_offset % h.file_alignment == 0 and s.raw_size % h.file_alignment == 0
        assert s.flags == pe.DATA_READ
        end = s.virtual_address + s.virtual_size
    read = {n: image[s.raw_offset : s.raw_offset + s.virtual_size] for n, s in new.items()}
    assert read[".linux"] == kernel and read[".initrd"] == initrd
    assert read[".cmdline"].rstrip(b"\0").decode().endswith("distbuild.board=qemu")
    size_of_image, _, checksum = struct.unpack_from("<III", image, h.optional + 56)
    assert size_of_image == pe._align(end, h.section_alignment)
    assert checksum == pe.checksum(image, h.optional + 64) != 0


def test_objdump_reads_the_amd64_uki() -> None:
    if shutil.which("objdump") is None:
        pytest.skip("needs binutils")
    image = make("amd64")
    path = Path("/tmp") / f"distbuild-uki-test-{id(image)}.efi"
    path.write_bytes(image)
    try:
        out = subprocess.run(
            ["objdump", "-h", str(path)], capture_output=True, text=True, check=True
        )
    finally:
        path.unlink()
    assert "pei-x86-64" in out.stdout
    for name in (".osrel", ".cmdline", ".initrd", ".linux"):
        assert name in out.stdout


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_pefile_reads_the_uki_and_agrees_on_its_checksum(arch: str) -> None:
    pefile = pytest.importorskip("pefile")
    kernel = b"K" * 70001
    parsed = pefile.PE(data=make(arch, kernel))
    assert parsed.verify_checksum()
    sections = {s.Name.rstrip(b"\0").decode(): s for s in parsed.sections}
    assert sections[".linux"].get_data()[: len(kernel)] == kernel
    assert parsed.OPTIONAL_HEADER.SizeOfImage == max(
        s.VirtualAddress + s.Misc_VirtualSize for s in parsed.sections
    ) + (-max(s.VirtualAddress + s.Misc_VirtualSize for s in parsed.sections)) % (
        parsed.OPTIONAL_HEADER.SectionAlignment
    )


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_same_inputs_same_bytes(arch: str) -> None:
    assert make(arch) == make(arch)


def test_a_stub_for_another_arch_or_a_signed_one_is_refused() -> None:
    with pytest.raises(DistbuildError, match="not arm64"):
        build_uki(stub("amd64"), "arm64", b"k", b"i", "c", "o")
    signed = bytearray(stub("amd64"))
    h = pe.read_headers(bytes(signed))
    struct.pack_into("<II", signed, h.optional + 112 + 8 * 4, 0x1000, 0x10)
    with pytest.raises(DistbuildError, match="signed"):
        pe.add_sections(bytes(signed), [(".x", b"1")])
    with pytest.raises(DistbuildError, match="PE32"):
        pe.add_sections(b"MZ" + bytes(200), [(".x", b"1")])


@pytest.mark.parametrize(
    "url",
    [
        "http://host/ x",
        "http://host/\nx",
        'http://host/"x',
        "http://user@host/",
        "ftp://host/",
        "http://host/a?b=c",
        "http://host/../x",
        "http://host/a;reboot",
        "http://host/${x}",
    ],
)
def test_a_hostile_channel_url_never_reaches_a_command_line(url: str) -> None:
    with pytest.raises(DistbuildError):
        installer_cmdline(url, "stable", "node", "qemu", ("ttyS0",))


@pytest.mark.parametrize(
    "field", [("stable x", "node", "qemu"), ("stable", "no\nde", "qemu"), ("stable", "node", 'q"')]
)
def test_hostile_names_are_refused(field: tuple[str, str, str]) -> None:
    with pytest.raises(DistbuildError):
        installer_cmdline("http://h:1", *field, ("ttyS0",))


@pytest.mark.parametrize("console", ["ttyS0 x", "ttyS0,1;reboot", "tty\nS0", "ttyS0,115200,x", ""])
def test_a_hostile_console_is_refused(console: str) -> None:
    with pytest.raises(DistbuildError, match="console"):
        installer_cmdline("http://h:1", "stable", "node", "qemu", (console,))


def test_a_board_console_with_its_speed_goes_on_the_command_line() -> None:
    line = installer_cmdline("http://h:1", "stable", "node", "orangepi-pc-qemu", ("ttyS0,115200",))
    assert line.split()[0] == "console=ttyS0,115200"


def test_a_board_adds_its_own_kernel_arguments_after_the_installer_words() -> None:
    armv7 = load_recipe(REPO, get_arch("armv7"))
    updater = UpdaterSetup("http://10.0.2.2:8080", Path("root.json"), "stable")
    line = board_cmdline(updater, "node", armv7.board("orangepi-pc-qemu"), ("ttyS0,115200",))
    assert line.split()[-1] == "maxcpus=1" and "distbuild.board=orangepi-pc-qemu" in line
    assert "maxcpus" not in board_cmdline(updater, "node", armv7.board("qemu"), ("ttyAMA0",))


def test_good_urls_pass_and_lose_a_trailing_slash() -> None:
    assert check_url("https://example.org:8443/channels/") == "https://example.org:8443/channels"
    assert check_url("http://[fd00::1]:8080") == "http://[fd00::1]:8080"


def test_the_uboot_script_boots_what_it_fetched_and_refuses_quotes() -> None:
    text = uboot_script("console=ttyAMA0 a=b", "armv7/netboot/linux", "armv7/netboot/initrd")
    assert 'setenv bootargs "console=ttyAMA0 a=b"' in text
    assert "tftpboot ${kernel_addr_r} armv7/netboot/linux" in text
    assert text.index("tftpboot ${ramdisk_addr_r}") < text.index("bootz")
    with pytest.raises(DistbuildError):
        uboot_script('x"; reset; "', "a", "b")
