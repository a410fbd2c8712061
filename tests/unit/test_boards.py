"""Board definitions: the checkout's boards load, hostile definitions are refused with
file:line, and a board whose loader cannot fit is an error before a disk is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distbuild.bootchain.uboot import boot_script
from distbuild.core.arch import get_arch
from distbuild.core.errors import DistbuildError, RecipeError
from distbuild.disk.boards import BoardError, board_env, gpt_end, plan_loader, uboot_config
from distbuild.model.board import DEFAULT_BOARD, load_board
from distbuild.model.recipe import load_recipe
from tests.conftest import REPO

SUNXI = """\
board: {name}
arches: [armv7]
packages: [u-boot-sunxi]
loader:
  - file: {file}
    offset: {offset}
partitions:
  first_kib: {first_kib}
  gpt_entries: {entries}
device_tree: sun8i-h3-orangepi-pc.dtb
console: ttyS0,115200
modules: [sunxi_mmc]
"""


def project(tmp_path: Path) -> Path:
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, tmp_path / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return tmp_path


def write_board(p: Path, name: str, **kw: object) -> None:
    values = {"file": "spl.bin", "offset": 8192, "first_kib": 1024, "entries": 8, **kw}
    (p / "recipes/boards" / f"{name}.yaml").write_text(SUNXI.format(name=name, **values))


def test_every_arch_has_qemu_first_and_armv7_has_the_allwinner_boards() -> None:
    for arch in ("amd64", "arm64", "armv7"):
        recipe = load_recipe(REPO, get_arch(arch))
        assert recipe.boards[0].name == DEFAULT_BOARD
        assert not recipe.boards[0].loader and recipe.boards[0].device_tree is None
    armv7 = load_recipe(REPO, get_arch("armv7"))
    names = {b.name for b in armv7.boards}
    assert {"orangepi-pc-qemu", "bananapi", "nanopi-neo", "orangepi-zero"} <= names
    bananapi = armv7.board("bananapi")
    assert bananapi.loader[0].file == "usr/lib/u-boot/Bananapi/u-boot-sunxi-with-spl.bin"
    assert bananapi.loader[0].offset == 8192 and bananapi.gpt_entries == 8
    # The initramfs carries every board's SoC drivers, after the recipe's own.
    assert armv7.initramfs_modules[: len(armv7.kernel_modules)] == armv7.kernel_modules
    assert {"sunxi_mmc", "dwmac_sun8i", "dwmac_sunxi"} <= set(armv7.initramfs_modules)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("file", "../../etc/passwd", "without '..'"),
        ("file", "/usr/lib/u-boot/x.bin", "without '..'"),
        ("offset", -1, "out of range"),
        ("offset", 1 << 40, "out of range"),
        ("entries", 6, "multiple of 4"),
        ("entries", 1000, "out of range"),
        ("first_kib", 0, "out of range"),
    ],
)
def test_hostile_board_definitions_are_refused(
    tmp_path: Path, field: str, value: object, needle: str
) -> None:
    p = project(tmp_path)
    write_board(p, "evil", **{field: value})
    with pytest.raises(RecipeError) as e:
        load_board(p, "evil")
    assert needle in str(e.value) and "evil.yaml" in str(e.value)


def test_board_names_follow_the_grammar_and_match_their_file(tmp_path: Path) -> None:
    p = project(tmp_path)
    with pytest.raises(RecipeError, match="not a valid board"):
        load_board(p, "../x")
    write_board(p, "one")
    (p / "recipes/boards/one.yaml").rename(p / "recipes/boards/two.yaml")
    with pytest.raises(RecipeError, match="says 'one'"):
        load_board(p, "two")


def test_a_recipe_naming_another_arch_board_or_none_is_refused(tmp_path: Path) -> None:
    p = project(tmp_path)
    arm64 = p / "recipes/arm64.yaml"
    arm64.write_text(arm64.read_text().replace("boards: [qemu", "boards: [qemu, bananapi"))
    with pytest.raises(RecipeError, match="for armv7, not arm64"):
        load_recipe(p, get_arch("arm64"))
    arm64.write_text(arm64.read_text().replace("boards: [qemu, bananapi", "boards: [qemu, nope"))
    with pytest.raises(RecipeError, match="no board definition 'nope'"):
        load_recipe(p, get_arch("arm64"))


def _tools(tmp_path: Path, size: int) -> Path:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "spl.bin").write_bytes(b"\xaa" * size)
    (tools / "link").symlink_to("/etc/passwd")
    return tools


def test_a_loader_that_runs_into_the_first_partition_is_an_error_with_a_hint(
    tmp_path: Path,
) -> None:
    p = project(tmp_path)
    write_board(p, "big", first_kib=512)
    board = load_board(p, "big")
    tools = _tools(tmp_path, 600 * 1024)
    with pytest.raises(BoardError) as e:
        plan_loader(board, tools)
    assert "runs past the first partition" in str(e.value)
    assert e.value.hint is not None and "first_kib to at least 608" in e.value.hint


def test_a_loader_inside_the_gpt_is_an_error_and_the_8_entry_table_leaves_8k_free(
    tmp_path: Path,
) -> None:
    p = project(tmp_path)
    write_board(p, "full", entries=128)
    board = load_board(p, "full")
    assert gpt_end(board) == 34 * 512  # 128 entries: LBA 2..33, over the SPL at 8 KiB
    with pytest.raises(BoardError) as e:
        plan_loader(board, _tools(tmp_path, 1024))
    assert e.value.hint is not None and "gpt_entries to 56 or less" in e.value.hint
    write_board(p, "small")
    small = load_board(p, "small")
    assert gpt_end(small) == 4 * 512
    (loader,) = plan_loader(small, tmp_path / "tools")
    assert loader.offset == 8192 and loader.data == b"\xaa" * 1024


def test_loader_files_are_confined_to_the_package_tree(tmp_path: Path) -> None:
    p = project(tmp_path)
    write_board(p, "escape", file="link")
    with pytest.raises(DistbuildError, match="leads out of"):
        plan_loader(load_board(p, "escape"), _tools(tmp_path, 16))


def test_uboot_config_reads_gzip_and_the_env_check_refuses_a_wrong_location(
    tmp_path: Path,
) -> None:
    import gzip

    from distbuild.disk.boards import check_env

    p = project(tmp_path)
    (p / "recipes/boards/cfg.yaml").write_text(
        "board: cfg\narches: [armv7]\nu_boot:\n  config: cfg.gz\n  env: fat\n"
    )
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "cfg.gz").write_bytes(
        gzip.compress(b'CONFIG_ENV_IS_IN_FAT=y\nCONFIG_ENV_FAT_FILE="uboot.env"\n')
    )
    board = load_board(p, "cfg")
    assert uboot_config(board, tools)["CONFIG_ENV_FAT_FILE"] == "uboot.env"
    check_env(board, tools, 1, [1 << 20])
    (tools / "cfg.gz").write_bytes(gzip.compress(b"CONFIG_ENV_IS_IN_MMC=y\n"))
    with pytest.raises(BoardError, match="does not keep its env in fat"):
        check_env(board, tools, 1, [1 << 20])


def test_boot_script_imports_board_env_adds_the_console_and_prefers_the_slot_dtb() -> None:
    script = boot_script(3)
    assert (
        "board.env && env import -t ${kernel_addr_r} ${filesize}"
        " distbuild_board distbuild_console distbuild_board_args" in script
    )
    assert 'setenv bootargs "${bootargs} ${distbuild_board_args}"' in script
    assert 'setenv bootargs "${bootargs} console=${distbuild_console}"' in script
    assert "${distbuild_slot}/board.dtb; then" in script
    assert "setenv distbuild_fdt ${fdtcontroladdr}" in script  # qemu virt: the machine's DTB
    # The console is appended after the slot's own arguments are read.
    assert script.index("console=${distbuild_console}") > script.index(
        'setenv bootargs "${distbuild_bootargs}"'
    )
    board = load_recipe(REPO, get_arch("armv7")).board("orangepi-pc-qemu")
    assert board_env(board) == (
        b"distbuild_board=orangepi-pc-qemu\ndistbuild_board_args=maxcpus=1\n"
        b"distbuild_console=ttyS0,115200\n"
    )
    # A board without arguments writes no variable for them.
    assert b"board_args" not in board_env(load_recipe(REPO, get_arch("armv7")).board("bananapi"))


@pytest.mark.parametrize(
    ("arg", "needle"),
    [
        ("maxcpus=1; reset", "not one plain kernel argument"),
        ("a b", "not one plain kernel argument"),
        ("x=${bootargs}", "not one plain kernel argument"),
        ('quiet"', "not one plain kernel argument"),
        ("root=/dev/sda2", "distbuild sets that argument"),
        ("init=/bin/sh", "distbuild sets that argument"),
        ("console=ttyS1", "distbuild sets that argument"),
        ("distbuild.slot=b", "distbuild sets that argument"),
    ],
)
def test_a_board_kernel_argument_is_one_plain_word_distbuild_does_not_own(
    tmp_path: Path, arg: str, needle: str
) -> None:
    p = project(tmp_path)
    write_board(p, "evil")
    path = p / "recipes/boards/evil.yaml"
    path.write_text(path.read_text() + f"kernel_args: [{json.dumps(arg)}]\n")
    with pytest.raises(RecipeError, match=needle):
        load_board(p, "evil")
    path.write_text(path.read_text().replace(json.dumps(arg), "cma=64M"))
    assert load_board(p, "evil").kernel_args == ("cma=64M",)


def test_a_board_no_built_arch_has_is_a_usage_error_before_anything_is_fetched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distbuild.cli.main import main

    p = project(tmp_path)
    out = tmp_path / "out"
    argv = ["--project", str(p), "image", "--arch", "amd64", "--out", str(out)]
    assert main([*argv, "--board", "bananapi"]) == 2
    err = capsys.readouterr().err
    assert "error: no arch being built (amd64) has a board 'bananapi'" in err
    assert "hint: boards of these arches: qemu" in err
    assert not [f for f in out.rglob("*") if f.is_file()] and not list(p.glob("images/*.lock.json"))
    assert main([*argv, "--board", "../x"]) == 2
    assert "invalid board" in capsys.readouterr().err


@pytest.mark.parametrize(
    "dest", ["boot.scr", "DISTBUILD.ENV", "a/zImage", "EFI/BOOT/BOOTAA64.EFI", "board.env"]
)
def test_a_board_cannot_replace_the_boot_chain_files(tmp_path: Path, dest: str) -> None:
    from distbuild.bootchain import get_chain
    from distbuild.disk.boards import partition_files

    p = project(tmp_path)
    (p / "recipes/boards/swap.yaml").write_text(
        f"board: swap\narches: [armv7]\nboot_text:\n  {dest}: evil\n"
    )
    armv7 = load_recipe(REPO, get_arch("armv7"))
    chain_files = get_chain("u-boot").loader_files(armv7, tmp_path)
    with pytest.raises(BoardError, match="belongs to the boot chain"):
        partition_files(load_board(p, "swap"), tmp_path, True, chain_files)
