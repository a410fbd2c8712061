"""The one registry of boot chains (distbuild.bootchain) and the names around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.bootchain import CHAINS, get_chain
from distbuild.core.arch import ARCHES, BOOT_CHAINS
from distbuild.core.bootctl.base import DirFiles, open_bootctl
from distbuild.core.errors import DistbuildError


def test_every_chain_a_recipe_may_name_is_registered_once_under_its_name() -> None:
    assert sorted(CHAINS) == sorted(BOOT_CHAINS)
    assert all(chain.name == name for name, chain in CHAINS.items())
    assert {a.boot_chain for a in ARCHES.values()} <= set(CHAINS)


@pytest.mark.parametrize("name", BOOT_CHAINS)
def test_each_chain_has_the_node_side_backend_of_the_same_name(name: str, tmp_path: Path) -> None:
    assert get_chain(name) is CHAINS[name]
    assert open_bootctl(name, DirFiles(tmp_path)).chain == name


def test_an_unknown_chain_is_refused_with_the_known_ones() -> None:
    with pytest.raises(DistbuildError) as e:
        get_chain("grub")
    assert e.value.hint is not None and "systemd-boot, u-boot" in e.value.hint
