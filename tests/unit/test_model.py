"""Recipes and image definitions: templating, includes, overrides, and errors that point at lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distbuild.core.arch import ARCHES
from distbuild.core.errors import RecipeError, UsageError
from distbuild.model.image import check_all, load_image
from distbuild.model.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, tmp_path / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return tmp_path


def test_every_recipe_and_image_checks() -> None:
    checked = check_all(REPO)
    assert "recipes/armv7.yaml" in checked
    assert "images/node.yaml (amd64)" in checked


def test_recipes_agree_with_the_arch_table() -> None:
    for arch in ARCHES.values():
        r = load_recipe(REPO, arch)
        assert r.debian_arch == arch.debian
        assert r.platform == arch.platform
        assert r.boot_chain == arch.boot_chain


def test_jinja_arch_scope_includes_and_overrides() -> None:
    armv7 = load_recipe(REPO, ARCHES["armv7"])
    amd64 = load_recipe(REPO, ARCHES["amd64"])
    node_arm = load_image(REPO, "node", armv7)
    node_x86 = load_image(REPO, "node", amd64)
    # Per-arch override adds u-boot-tools on armv7 only.
    assert "u-boot-tools" in node_arm.packages and "u-boot-tools" not in node_x86.packages
    # The kernel package comes from the recipe.
    assert "linux-image-armmp-lpae" in node_arm.packages
    # Jinja rendered the console into inittab.
    inittab = {f.path: f.content for f in node_arm.files}["/etc/inittab"]
    assert b"ttyAMA0::respawn" in inittab
    # include/base.yaml contributed its removals.
    assert "usr/share/doc/*" in node_x86.remove
    toolbox = load_image(REPO, "toolbox", armv7)
    assert dict(toolbox.labels)["org.opencontainers.image.description"].endswith("(armv7)")


def _error(fn: object) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        fn()  # type: ignore[operator]
    return info.value


def test_unknown_key_names_file_line_and_path(proj: Path) -> None:
    p = proj / "images/toolbox.yaml"
    p.write_text(p.read_text().replace("  cmd:", "  cmdd:"))
    e = _error(lambda: load_image(proj, "toolbox", load_recipe(proj, ARCHES["amd64"])))
    assert "toolbox.yaml:" in str(e) and "config.cmdd" in str(e) and "unknown key" in str(e)
    line = int(str(e).split("toolbox.yaml:")[1].split(":")[0])
    assert "cmdd" in p.read_text().splitlines()[line - 1]
    assert e.hint and "known keys" in e.hint


def test_wrong_type_in_recipe(proj: Path) -> None:
    p = proj / "recipes/arm64.yaml"
    p.write_text(p.read_text().replace("memory: 512", "memory: lots"))
    e = _error(lambda: load_recipe(proj, ARCHES["arm64"]))
    assert "arm64.yaml:" in str(e) and "qemu.memory" in str(e) and "integer" in str(e)


def test_template_error_has_line(proj: Path) -> None:
    p = proj / "images/toolbox.yaml"
    p.write_text(p.read_text() + "description: '{{ arch.nosuch }}'\n")
    e = _error(lambda: load_image(proj, "toolbox", load_recipe(proj, ARCHES["amd64"])))
    assert "template error" in str(e)
    line = len(p.read_text().splitlines())
    assert f"toolbox.yaml:{line}" in str(e)


def test_unparsable_yaml(proj: Path) -> None:
    p = proj / "images/toolbox.yaml"
    p.write_text(p.read_text().replace("packages:\n", "packages: [unclosed\n"))
    e = _error(lambda: load_image(proj, "toolbox", load_recipe(proj, ARCHES["amd64"])))
    assert "invalid YAML" in str(e) and "toolbox.yaml:" in str(e)


def test_duplicate_key_and_bad_override(proj: Path) -> None:
    p = proj / "images/toolbox.yaml"
    p.write_text(p.read_text() + "overrides:\n  sparc: {packages: [x]}\n")
    e = _error(lambda: load_image(proj, "toolbox", load_recipe(proj, ARCHES["amd64"])))
    assert "overrides.sparc" in str(e)


def test_unknown_image() -> None:
    with pytest.raises(UsageError) as info:
        load_image(REPO, "nosuch", load_recipe(REPO, ARCHES["amd64"]))
    assert info.value.hint and "toolbox" in info.value.hint


def test_wrong_platform_in_recipe(proj: Path) -> None:
    p = proj / "recipes/armv7.yaml"
    p.write_text(p.read_text().replace("platform: linux/arm/v7", "platform: linux/arm/v6"))
    e = _error(lambda: load_recipe(proj, ARCHES["armv7"]))
    assert "oci.platform" in str(e)
