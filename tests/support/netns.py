"""A network namespace of the test's own: the only network a guest gets.

The namespace has just ``lo``. Servers the test runs are bound to its
127.0.0.1 (sockets are created with the calling thread switched into it),
and qemu runs in it through ``ip netns exec``, with a user-mode network:
the guest reaches the namespace's loopback as 10.0.2.2, and nothing else
exists to reach.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from distbuild.core.run import run

CLONE_NEWNET = 0x40000000
NIC = "user,model=virtio-net-pci"


@dataclass(frozen=True)
class NetNs:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @property
    def wrap(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Switch this thread into the namespace (sockets made now live there)."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into " + self.path)
            try:
                yield
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(own)
            os.close(target)


@contextmanager
def netns(name: str) -> Iterator[NetNs]:
    ns = NetNs(name)
    run(["ip", "netns", "del", name], check=False, capture=True)
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield ns
    finally:
        run(["ip", "netns", "del", name], check=False)
