"""U-Boot boot control: the env file format against U-Boot's own tools, and the
backend's state machine on a mounted directory and on a FAT image (mtools)."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from distbuild.bootchain import get_chain
from distbuild.bootchain.uboot import boot_script, script_image
from distbuild.core.arch import get_arch
from distbuild.core.bootctl.base import BootControl, DirFiles, ImageFiles, SlotBoot, open_bootctl
from distbuild.core.bootctl.uboot import (
    ENV_BACKUP,
    ENV_FILE,
    ENV_SIZE,
    UBootControl,
    initial_state,
    pack_env,
    unpack_env,
)
from distbuild.core.errors import DistbuildError
from distbuild.model.recipe import Recipe, load_recipe
from tests.conftest import REPO

# What U-Boot 2023.01 (Debian's u-boot-qemu, qemu_arm) wrote to a FAT file for
# `setenv BOOT_ORDER "B A"; setenv BOOT_A_LEFT 3; setenv BOOT_B_LEFT 2;
#  env export -c -s 0x1000 $addr BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; fatwrite … 0x1000`:
# the CRC and the head of the data (the rest is NUL padding).
UBOOT_EXPORT_CRC = 0xA22E9B8B
UBOOT_EXPORT_DATA = b"BOOT_A_LEFT=3\0BOOT_B_LEFT=2\0BOOT_ORDER=B A\0\0"

needs_ubtools = pytest.mark.skipif(
    shutil.which("mkenvimage") is None or shutil.which("mkimage") is None,
    reason="u-boot-tools not installed (apt-get install u-boot-tools)",
)
needs_libubootenv = pytest.mark.skipif(
    shutil.which("fw_printenv") is None or shutil.which("fw_setenv") is None,
    reason="libubootenv-tool not installed (apt-get install libubootenv-tool)",
)


def test_pack_env_matches_what_uboot_exported() -> None:
    blob = pack_env({"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "BOOT_A_LEFT": "3"})
    assert len(blob) == ENV_SIZE
    assert int.from_bytes(blob[:4], "little") == UBOOT_EXPORT_CRC
    assert blob[4:].rstrip(b"\0") + b"\0\0" == UBOOT_EXPORT_DATA
    assert unpack_env(blob) == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "2"}


@needs_ubtools
def test_pack_env_equals_mkenvimage(tmp_path: Path) -> None:
    values = {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0", "x.y": "a=b c"}
    text = tmp_path / "env.txt"
    text.write_text("".join(f"{k}={values[k]}\n" for k in sorted(values)))
    out = tmp_path / "env.bin"
    subprocess.run(["mkenvimage", "-p", "0", "-s", hex(ENV_SIZE), "-o", out, text], check=True)
    assert pack_env(values) == out.read_bytes()
    # 0xff padding (mkenvimage's default, flash-style) is also a valid env.
    subprocess.run(["mkenvimage", "-s", hex(ENV_SIZE), "-o", out, text], check=True)
    assert unpack_env(out.read_bytes()) == values


@needs_libubootenv
def test_fw_printenv_and_fw_setenv_share_the_format(tmp_path: Path) -> None:
    env = tmp_path / "distbuild.env"
    env.write_bytes(pack_env(initial_state(3)))
    config = tmp_path / "fw_env.config"
    config.write_text(f"{env} 0x0 {ENV_SIZE:#x}\n")
    shown = subprocess.run(
        ["fw_printenv", "-c", config], check=True, capture_output=True, text=True
    ).stdout
    assert dict(line.split("=", 1) for line in shown.splitlines()) == initial_state(3)
    subprocess.run(["fw_setenv", "-c", config, "BOOT_ORDER", "B A"], check=True)
    got = unpack_env(env.read_bytes())
    assert got is not None and got["BOOT_ORDER"] == "B A"


def test_unpack_env_rejects_damage() -> None:
    blob = bytearray(pack_env(initial_state(3)))
    assert unpack_env(bytes(blob)) == initial_state(3)
    blob[100] ^= 1  # in the padding: the CRC still covers it, as in U-Boot
    assert unpack_env(bytes(blob)) is None
    assert unpack_env(pack_env(initial_state(3))[:2000]) is None
    assert unpack_env(b"") is None


def test_pack_env_refuses_what_uboot_cannot_hold() -> None:
    with pytest.raises(DistbuildError):
        pack_env({"A": "x\ny"})
    with pytest.raises(DistbuildError):
        pack_env({"bad name": "x"})
    with pytest.raises(DistbuildError, match="more than"):
        pack_env({"A": "x" * ENV_SIZE})


@needs_ubtools
def test_script_image_equals_mkimage(tmp_path: Path) -> None:
    text = boot_script(3)
    src = tmp_path / "boot.cmd"
    src.write_text(text)
    out = tmp_path / "boot.scr"
    subprocess.run(
        ["mkimage", "-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-a", "0",
         "-e", "0", "-n", "distbuild A/B boot", "-d", src, out],
        check=True, capture_output=True, env={"SOURCE_DATE_EPOCH": "0", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert script_image(text) == out.read_bytes()


def test_boot_script_counts_every_slot_in_rauc_variables() -> None:
    text = boot_script(5)
    assert "setenv BOOT_TRIES 5" in text
    for slot in "AB":
        assert f"setexpr BOOT_{slot}_LEFT ${{BOOT_{slot}_LEFT}} - 1" in text
    # The try is saved (both copies, primary first) before the kernel is loaded.
    assert text.index("distbuild.env 0x1000") < text.index("distbuild.env.bak 0x1000")
    assert text.rindex("fatwrite") < text.index("bootz")
    with pytest.raises(DistbuildError):
        boot_script(10)


# --- the backend, on both kinds of boot partition ------------------------------


def _dir_files(tmp_path: Path) -> DirFiles:
    root = tmp_path / "boot"
    root.mkdir()
    return DirFiles(root)


def _image_files(tmp_path: Path) -> ImageFiles:
    # A GPT disk whose first partition is the FAT boot partition at 1 MiB.
    disk = tmp_path / "disk.img"
    fat = tmp_path / "fat.img"
    subprocess.run(["truncate", "-s", "20M", disk], check=True)
    subprocess.run(["sgdisk", "-n1:2048:+16M", "-t1:ef00", "-c1:boot", disk], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["mkfs.vfat", "-C", fat, str(16 * 1024)], check=True, capture_output=True)
    with disk.open("r+b") as d:
        d.seek(1 << 20)
        d.write(fat.read_bytes())
    return ImageFiles(disk, 1 << 20)


FILES: dict[str, Callable[[Path], DirFiles | ImageFiles]] = {
    "dir": _dir_files,
    "image": _image_files,
}


@pytest.fixture(params=sorted(FILES))
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> BootControl:
    """A boot partition as the disk build leaves it before any slot is installed."""
    files = FILES[request.param](tmp_path)
    for path, data in get_chain("u-boot").loader_files(_recipe(), tmp_path).items():
        assert isinstance(data, bytes)
        files.write(path, data)
    return open_bootctl("u-boot", files, cmdline="console=ttyAMA0 distbuild.slot=a")


def _recipe(project: Path = REPO) -> Recipe:
    return load_recipe(project, get_arch("armv7"))


def _boot(version: str) -> SlotBoot:
    return SlotBoot(
        version=version,
        kernel=b"zImage " + version.encode(),
        initrd=b"initrd " + version.encode(),
        cmdline=f"console=ttyAMA0 distbuild.verity=00ff distbuild.version={version} panic=5",
    )


def test_first_install_update_and_bless(fresh: BootControl) -> None:
    assert isinstance(fresh, UBootControl)
    assert fresh.boot_order() == []  # nothing installed: nothing to boot
    fresh.install("a", _boot("1.0"))
    fresh.set_next("a", 3)
    a = fresh.states()["a"]
    assert (a.bootable, a.tries_left, a.good, a.version) == (True, 3, False, "1.0")
    entry = fresh.entry("a")
    assert entry["distbuild_bootargs"].split()[-1] == "distbuild.slot=a"
    assert fresh.files.read("a/zImage") == b"zImage 1.0"
    assert fresh.files.read("a/initrd.img") == b"initrd 1.0"

    fresh.mark_good("a")
    assert fresh.booted() == "a"
    a = fresh.states()["a"]
    assert (a.bootable, a.tries_left, a.good) == (True, 0, True)
    assert fresh.counters()["BOOT_A_LEFT"] == "3"  # RAUC: full count for a good slot

    # An update into B: unbootable while written, then on trial ahead of A.
    fresh.install("b", _boot("2.0"))
    b = fresh.states()["b"]
    assert (b.bootable, b.tries_left, b.good, b.version) == (False, 0, False, "2.0")
    assert fresh.boot_order() == ["a"]
    fresh.set_next("b", 2)
    assert fresh.boot_order() == ["b", "a"]
    assert fresh.counters()["BOOT_ORDER"] == "B A"
    assert fresh.states()["b"].tries_left == 2
    assert fresh.states()["a"].good  # A stays good while B is on trial
    fresh.mark_good("b")
    assert fresh.states()["b"].good and fresh.boot_order() == ["b", "a"]


class _CutAfter:
    """BootFiles that lose power after ``n`` more writes: later writes raise."""

    def __init__(self, files: DirFiles, n: int) -> None:
        self.inner, self.left = files, n

    def read(self, path: str) -> bytes | None:
        return self.inner.read(path)

    def write(self, path: str, data: bytes) -> None:
        if self.left == 0:
            raise OSError("power cut")
        self.left -= 1
        self.inner.write(path, data)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)

    def list(self, directory: str) -> list[str]:
        return self.inner.list(directory)

    def remove(self, path: str) -> None:
        self.inner.remove(path)


@pytest.mark.parametrize("cut_after", range(5))
def test_reinstall_cut_at_any_write_never_leaves_a_bootable_half_slot(
    tmp_path: Path, cut_after: int
) -> None:
    files = _dir_files(tmp_path)
    ctl = open_bootctl("u-boot", files, cmdline="")
    ctl.install("a", _boot("1.0"))
    ctl.set_next("a", 3)
    ctl.mark_good("a")
    ctl.install("b", _boot("1.5"))
    ctl.set_next("b", 3)
    ctl.mark_good("b")
    # Rewriting B: env (2 copies), kernel, initrd, entry = 5 writes; cut after each.
    with pytest.raises(OSError):
        open_bootctl("u-boot", _CutAfter(files, cut_after), cmdline="").install(  # type: ignore[arg-type]
            "b", _boot("2.0")
        )
    after = open_bootctl("u-boot", files, cmdline="")
    b = after.states()["b"]
    if cut_after == 0:  # not even the primary env copy was written: B is still the old, good B
        assert b.bootable and b.version == "1.5"
    else:  # unbootable from the first env write on; no entry once its files change
        assert not b.bootable
        assert b.version == ("1.5" if cut_after == 1 else None)
    assert after.states()["a"].good and "a" in after.boot_order()


def test_both_copies_written_and_either_survives_a_power_cut(fresh: BootControl) -> None:
    files = fresh.files
    fresh.install("a", _boot("1.0"))
    fresh.set_next("a", 3)
    fresh.mark_good("a")
    assert files.read(ENV_FILE) == files.read(ENV_BACKUP)
    good = fresh.states()

    # Cut while the primary was rewritten: half a file.
    primary = files.read(ENV_FILE)
    assert primary is not None
    files.write(ENV_FILE, primary[: len(primary) // 2])
    assert fresh.states() == good
    assert isinstance(fresh, UBootControl)
    assert fresh.read_env()[1] == ENV_BACKUP

    # The next write repairs both copies.
    fresh.set_next("a", 2)
    assert fresh.read_env()[1] == ENV_FILE
    assert files.read(ENV_FILE) == files.read(ENV_BACKUP)

    # Cut while the backup was rewritten: the primary is whole and newest.
    backup = bytearray(files.read(ENV_BACKUP) or b"")
    backup[ENV_SIZE // 2] ^= 0xFF
    files.write(ENV_BACKUP, bytes(backup))
    assert fresh.read_env()[1] == ENV_FILE
    assert fresh.states()["a"].tries_left == 2


def test_no_valid_copy_falls_back_to_the_scripts_defaults(tmp_path: Path) -> None:
    files = _dir_files(tmp_path)
    ctl = open_bootctl("u-boot", files, cmdline="")
    assert ctl.booted() is None
    # The boot script's defaults when it finds no valid copy: every slot, full tries.
    assert ctl.boot_order() == ["a", "b"]
    assert ctl.states()["b"].tries_left == 3


def test_bad_requests(fresh: BootControl) -> None:
    with pytest.raises(DistbuildError, match="slot"):
        fresh.set_next("c")
    with pytest.raises(DistbuildError, match="tries"):
        fresh.set_next("a", 0)
    with pytest.raises(DistbuildError, match="tries"):
        fresh.set_next("a", 10)
    before = fresh.files.read(ENV_FILE)
    with pytest.raises(DistbuildError):
        fresh.install("b", SlotBoot("2.0\n", b"k", b"i", "console=ttyAMA0"))
    assert fresh.files.read(ENV_FILE) == before and fresh.files.read("b/zImage") is None


def test_crc_is_zlib_crc32_little_endian() -> None:
    blob = pack_env({"K": "v"})
    assert blob[:4] == zlib.crc32(blob[4:]).to_bytes(4, "little")


def test_chain_files_and_qemu_args(tmp_path: Path) -> None:
    recipe = _recipe()
    chain = get_chain("u-boot")
    files = chain.loader_files(recipe, tmp_path)
    assert set(files) == {"boot.scr", ENV_FILE, ENV_BACKUP}
    script = files["boot.scr"]
    assert isinstance(script, bytes) and script[:4] == bytes.fromhex("27051956")
    assert f"setenv BOOT_TRIES {recipe.boot_tries}".encode() in script
    env = files[ENV_FILE]
    assert isinstance(env, bytes) and unpack_env(env) == initial_state(recipe.boot_tries)
    args = chain.qemu_args(recipe, tmp_path / "disk.qcow2", tmp_path)
    firmware = dict(recipe.firmware)["u-boot"]
    assert args[args.index("-bios") + 1] == firmware
    assert "format=qcow2" in args[args.index("-drive") + 1]
    assert args[args.index("-M") + 1] == "virt,highmem=off"


def test_missing_uboot_firmware_is_a_clear_error(tmp_path: Path) -> None:
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    path = tmp_path / "recipes" / "armv7.yaml"
    path.write_text(
        path.read_text().replace("/usr/lib/u-boot/qemu_arm/u-boot.bin", "/nonexistent/u-boot.bin")
    )
    with pytest.raises(DistbuildError) as err:
        get_chain("u-boot").firmware(_recipe(tmp_path))
    assert "/nonexistent/u-boot.bin" in err.value.message
    assert err.value.hint and "u-boot-qemu" in err.value.hint
