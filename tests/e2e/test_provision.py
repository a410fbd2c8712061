"""First-boot provisioning on a booted node (amd64 under TCG, issue 12).

One disk, two boots, in a network namespace of the test's own (qemu's
user-mode network is the guest's only one):

1. ``distbuild disk provision`` writes a ``distbuild-provision.yaml`` onto
   the boot partition (hostname, one SSH key, a static address, a
   ``health.d`` hook). The console shows the node provisioned with that
   hostname and key, its static address (not DHCP's 10.0.2.15), ``services
   up``, and the hook prints root's ``authorized_keys`` read through the
   ``/root/.ssh`` path dropbear uses.
2. A bad file (an unknown key) replaces it on the boot partition, written
   by hand since ``distbuild disk provision`` refuses it: the console reports
   ``provision error``, the node still boots to ``services up`` with its
   previous hostname, and ``status`` (printed on the console by the update
   daemon) shows the error; the key is still there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.bootctl.base import ImageFiles
from distbuild.core.run import run
from distbuild.disk.diskimg import partition_offsets
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import Guest
from tests.conftest import REPO, Builder, read_record, run_cli
from tests.support.netns import NIC, NetNs, netns
from tests.support.ssh import ed25519_key

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

ARCH = "amd64"
BOOT = 240.0  # one boot to the update daemon's status under TCG on a busy 2-core machine
KEY = ed25519_key("owner@e2e")
GOOD = f"""# distbuild-provision.yaml for the e2e node
instance-id: e2e-prov-1
hostname: e2e-prov
ssh_authorized_keys:
  - {KEY}
network:
  version: 2
  ethernets:
    eth0:
      addresses: [10.0.2.77/24]
      gateway4: 10.0.2.2
      nameservers:
        addresses: [10.0.2.3]
write_files:
  - path: /etc/distbuild/health.d/10-e2e
    permissions: '0755'
    content: |
      #!/bin/sh
      echo "e2e: authorized_keys: $(cat /root/.ssh/authorized_keys)"
      echo "e2e: eth0 $(ip -o -4 addr show dev eth0 | awk '{{print $4}}')"
"""
BAD = "instance-id: e2e-prov-2\nhostname: other\nfavourite_colour: blue\n"


def fresh_disk(build: Path, workdir: Path) -> Path:
    (rel,) = [
        a["path"]
        for a in read_record(build)["artifacts"]
        if a["kind"] == "disk" and a["arch"] == ARCH
    ]
    disk = workdir / "node.img"
    run(["cp", "--sparse=always", build / rel, disk])
    return disk


# What the console shows, in order, with the seconds each may take after the last.
FIRST_BOOT = [
    ("distbuild-os: provisioned hostname=e2e-prov keys=1 files=1 network=static", BOOT),
    ("distbuild-os: hostname e2e-prov", 30),
    ("distbuild-os: static network: address eth0 10.0.2.77/24", 60),
    ("distbuild-os: services up", BOOT),
    (f"e2e: authorized_keys: {KEY}", 30),  # read as dropbear does, through /root/.ssh
    ("e2e: eth0 10.0.2.77/24", 30),
    ("distbuild-os: slot a marked good", 60),
    ("provision:  instance-id e2e-prov-1 from boot partition", 60),  # status
]
BAD_BOOT = [
    ("distbuild-os: provision error: boot partition/distbuild-provision.yaml:", BOOT),
    ("unknown key 'favourite_colour'", 5),
    ("distbuild-os: hostname e2e-prov", 30),  # the previous configuration stays
    ("distbuild-os: services up", BOOT),
    (f"e2e: authorized_keys: {KEY}", 30),  # kept on data across the reboot
    ("distbuild-os: slot a marked good", 60),
    ("provision:  instance-id e2e-prov-1", 60),  # status: what was applied ...
    ("provision:  ERROR at", 5),  # ... and the refused input
]


def boot(recipe: Recipe, disk: Path, ns: NetNs, log: Path, expect: list[tuple[str, float]]) -> str:
    """Boot the node in the namespace until the console showed ``expect``; its transcript."""
    with (
        log.open("w") as echo,
        Guest(recipe, disk, write=True, echo=echo, nic=NIC, wrap=ns.wrap) as g,
    ):
        for text, seconds in expect:
            g.expect(text, seconds)
    return g.transcript


def test_a_node_applies_its_provisioning_and_survives_a_bad_file(
    build_node: Builder, tmp_path: Path
) -> None:
    build = build_node(ARCH, version="1.0.0")
    recipe = load_recipe(REPO, get_arch(ARCH))
    disk = fresh_disk(build, tmp_path)
    good = tmp_path / "distbuild-provision.yaml"
    good.write_text(GOOD)
    assert run_cli("disk", "provision", disk, good) == 0

    with netns(f"distbuild-e2e-prov-{os.getpid()}") as ns:
        first = boot(recipe, disk, ns, tmp_path / "first.console.log", FIRST_BOOT)
        assert "provision error" not in first

        esp = ImageFiles(disk, partition_offsets(disk)["esp"][0])
        esp.write("distbuild-provision.yaml", BAD.encode())
        second = boot(recipe, disk, ns, tmp_path / "second.console.log", BAD_BOOT)
        assert "provisioned hostname=other" not in second
