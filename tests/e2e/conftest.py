"""The e2e tests' nodes: each follows a channel of its own arch, served by the test.

The update tests serve that channel and a FleetLock server inside a network
namespace they create: qemu's user network shows the guest that namespace's
loopback as 10.0.2.2. Only the nodes built here (``build_node``) bake in these
addresses and the short update intervals; other tests' builds do not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Builder, NodeChannels

GUEST_HOST = "10.0.2.2"
CHANNEL_PORT = 8080
FLEETLOCK_PORT = 8081
UPDATE_SETTINGS = {
    "poll_interval": "3s",
    "poll_jitter": "1s",
    "reboot": "fleetlock",
    "fleetlock_url": f"http://{GUEST_HOST}:{FLEETLOCK_PORT}",
    "fleetlock_group": "e2e",
    "retry_wait": "1s",
    "retry_wait_max": "4s",
    "read_timeout": "20s",
}


def follow_args(channels: NodeChannels, arch: str) -> list[str]:
    """What ``distbuild image`` needs to bake the arch's e2e channel into a node."""
    args = [
        "--channel-url",
        f"http://{GUEST_HOST}:{CHANNEL_PORT}",
        "--channel",
        channels.name(arch),
        "--trust-root",
        str(channels.root_json(arch)),
    ]
    for key, value in UPDATE_SETTINGS.items():
        args += ["--update-setting", f"{key}={value}"]
    return args


@pytest.fixture(scope="session")
def build_node(build_image: Builder, node_channels: NodeChannels) -> Builder:
    """Build a single-arch node image that follows its arch's e2e channel (once per
    session and version, shared by every e2e test)."""

    def build(arch: str, version: str = "1.0.0") -> Path:
        return build_image("node", arch, version=version, extra=follow_args(node_channels, arch))

    return build
