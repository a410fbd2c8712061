"""SSH into a node with its owner's provisioned key (amd64 under TCG, issue 12).

Two copies of one node disk image, each provisioned with
``distbuild disk provision`` (the owner's key on one, someone else's on the
other), boot at once in a network namespace of the test's own. qemu's
user-mode network forwards the namespace's 127.0.0.1:PORT to the guest's
:22, and OpenSSH's ``ssh``, run inside the namespace, logs in as an owner
would (a key made by the test, a throwaway known_hosts, never a prompt):

- with the key provisioned, the login runs ``hostname`` and
  ``ctr containers list`` on the node;
- the node without that key refuses the same login (``Permission denied
  (publickey)``);
- the two nodes made different host keys on their first boot: the
  fingerprints on their consoles differ, and each is the key ssh saw.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distbuild.core.arch import get_arch
from distbuild.core.run import run
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.qemu import Guest
from tests.conftest import REPO, Builder, read_record, run_cli
from tests.support.netns import NIC, NetNs, netns
from tests.support.node_console import host_key
from tests.support.ssh import SshClient, ed25519_identity, ed25519_key

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root, pytest.mark.network]

ARCH = "amd64"
BOOT = 300.0  # to `services up` under TCG, two guests at once on a busy 2-core machine
LOGIN = "hostname; ctr containers list"


@dataclass
class Node:
    """One guest of the story: its disk, the key provisioned on it, its forwarded port."""

    name: str
    authorized: str  # the public key line provisioned for root
    port: int
    disk: Path
    transcript: str = ""
    login: tuple[int, str, str] = (-1, "", "")  # ssh's exit code, stdout, stderr
    seen_key: str = ""  # the host key fingerprint ssh saw
    error: BaseException | None = None
    elapsed: dict[str, float] = field(default_factory=dict)


def provisioned_copy(image: Path, node: Node, workdir: Path) -> None:
    """A copy of the node's disk image with ``node``'s provisioning file on its boot partition."""
    run(["cp", "--sparse=always", image, node.disk])
    spec = workdir / f"{node.name}.provision.yaml"
    spec.write_text(
        f"instance-id: {node.name}-1\nhostname: {node.name}\n"
        f"ssh_authorized_keys:\n  - {node.authorized}\n"
    )
    assert run_cli("disk", "provision", node.disk, spec) == 0


def boot_and_log_in(recipe: Recipe, node: Node, ns: NetNs, client: SshClient, log: Path) -> None:
    """Boot ``node`` to ``services up``, log in over the forwarded port, then stop it."""
    nic = f"{NIC},hostfwd=tcp:127.0.0.1:{node.port}-:22"
    try:
        with (
            log.open("w") as echo,
            Guest(recipe, node.disk, write=True, echo=echo, nic=nic, wrap=ns.wrap) as g,
        ):
            g.expect(f"distbuild-os: hostname {node.name}", BOOT)
            node.elapsed["services up"] = g.expect("distbuild-os: services up", BOOT)
            start = time.monotonic()
            proc = client.run(LOGIN)
            node.elapsed["login"] = time.monotonic() - start
            node.login = (proc.returncode, proc.stdout.decode(), proc.stderr.decode())
            node.seen_key = client.host_key()
            g.expect("distbuild-os: slot a marked good", 120)
        node.transcript = g.transcript
    except BaseException as e:  # re-raised by the test's thread
        node.error = e


def test_the_owner_logs_in_with_the_provisioned_key_and_no_one_else(
    build_node: Builder, tmp_path: Path
) -> None:
    build = build_node(ARCH, version="1.0.0")
    recipe = load_recipe(REPO, get_arch(ARCH))
    (rel,) = [
        a["path"]
        for a in read_record(build)["artifacts"]
        if a["kind"] == "disk" and a["arch"] == ARCH
    ]
    owner = ed25519_identity(tmp_path / "id_ed25519", "owner@e2e")
    nodes = [
        Node("ssh-owned", owner, 2201, tmp_path / "owned.img"),
        Node("ssh-other", ed25519_key("someone-else@e2e"), 2202, tmp_path / "other.img"),
    ]
    for node in nodes:
        provisioned_copy(build / rel, node, tmp_path)

    with netns(f"distbuild-e2e-ssh-{os.getpid()}") as ns:
        threads = []
        for node in nodes:
            known = tmp_path / f"{node.name}.known_hosts"
            client = SshClient(tmp_path / "id_ed25519", known, node.port, wrap=ns.wrap)
            log = tmp_path / f"{node.name}.console.log"
            args = (recipe, node, ns, client, log)
            threads.append(threading.Thread(target=boot_and_log_in, args=args, name=node.name))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for node in nodes:
        if node.error is not None:
            raise node.error
        print(node.name, node.elapsed, node.login)
    owned, other = nodes

    rc, out, err = owned.login
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "ssh-owned", out
    assert lines[1].split() == ["CONTAINER", "IMAGE", "RUNTIME"], out  # ctr answered

    rc, out, err = other.login
    assert rc != 0 and out == "", (rc, out)
    assert "Permission denied (publickey)" in err, err  # and keys were all it offered

    # Made on each first boot from the same image, so never the same twice;
    # and each is the key the client was shown for that node.
    made = [host_key(n.transcript).rstrip("=") for n in nodes]
    seen = [n.seen_key.rstrip("=") for n in nodes]
    assert made[0] != made[1], made
    assert seen == made, (seen, made)
