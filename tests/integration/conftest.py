"""Fixtures shared by the integration tests: real services started by the tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.dockerd import (
    Dockerd,
    foreign_qemu_names,
    register_qemu_binfmt,
    start_dockerd,
    stop_dockerd,
    unregister_binfmt,
)
from tests.support.registry import registry  # noqa: F401 (session fixture)
from tests.support.sigstore import signed_wheel  # noqa: F401 (session fixture)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd (own containerd, runc, no network, never pulls) for the session."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    engine = start_dockerd()
    try:
        yield engine
    finally:
        stop_dockerd(engine)


@pytest.fixture(scope="session")
def qemu_binfmt() -> Iterator[list[str]]:
    """qemu-user registered (fix-binary) for every arch but the host's; names returned.

    Entries this fixture added are removed at the end, so builds later on this
    host cannot lean on emulation by accident.
    """
    if os.geteuid() != 0:
        pytest.skip("registering binfmt_misc entries needs root")
    names = foreign_qemu_names()
    added = register_qemu_binfmt(names)
    try:
        yield names
    finally:
        unregister_binfmt(added)
