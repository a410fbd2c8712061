"""Boot chains, build side: the one registry of the firmware + boot loader pairs by name.

Each chain (:mod:`~distbuild.bootchain.base` has the interface) knows what goes
on a fresh boot partition and how qemu boots it; slot files and state are
written by the matching :mod:`distbuild.core.bootctl` backend, the code a node
runs. The names are the recipe's ``boot.chain`` values
(:data:`distbuild.core.arch.BOOT_CHAINS`) and the bootctl backends' names.
"""

from __future__ import annotations

from distbuild.bootchain.base import BootChain, PartitionFiles
from distbuild.bootchain.efi import SystemdBootChain
from distbuild.bootchain.uboot import UBootChain
from distbuild.core.errors import DistbuildError

__all__ = ["CHAINS", "BootChain", "PartitionFiles", "get_chain"]

CHAINS: dict[str, BootChain] = {chain.name: chain for chain in (SystemdBootChain(), UBootChain())}
"""Every boot chain, by name."""


def get_chain(name: str) -> BootChain:
    """The boot chain a recipe names (``boot.chain``)."""
    if name not in CHAINS:
        raise DistbuildError(
            f"unknown boot chain {name!r}",
            hint=f"use one of: {', '.join(sorted(CHAINS))} (recipe key boot.chain)",
        )
    return CHAINS[name]
