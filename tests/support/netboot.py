"""A small image with only the netboot output, built once per session (amd64 + armv7)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Builder, NodeChannels

IMAGE = "netboot-tiny"
DEFINITION = f"""\
include: include/base.yaml
name: {IMAGE}
description: a kernel and busybox, netbooted
outputs: [netboot]
kernel: true
busybox_links: true
packages: [busybox]
"""
CHANNEL_URL = "http://10.0.2.2:8080/channels"


def channel_args(channels: NodeChannels, arch: str) -> list[str]:
    return [
        "--channel-url",
        CHANNEL_URL,
        "--channel",
        channels.name(arch),
        "--trust-root",
        str(channels.root_json(arch)),
    ]


def build_netboot(project: Path, build_image: Builder, channels: NodeChannels, arch: str) -> Path:
    (project / "images" / f"{IMAGE}.yaml").write_text(DEFINITION)
    return build_image(IMAGE, arch, extra=channel_args(channels, arch))
