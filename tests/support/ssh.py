"""SSH keys of each type, freshly made, as an owner would paste them; and an
SSH client (OpenSSH's ``ssh``) that logs in with one of them."""

from __future__ import annotations

import base64
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from distbuild.core import fsutil
from distbuild.core.run import run, which

OPENSSH = serialization.PublicFormat.OpenSSH


def ed25519_key(comment: str = "owner@laptop") -> str:
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    return pub.public_bytes(serialization.Encoding.OpenSSH, OPENSSH).decode() + f" {comment}"


def rsa_key() -> str:
    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return pub.public_bytes(serialization.Encoding.OpenSSH, OPENSSH).decode()


def ecdsa_key() -> str:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    return pub.public_bytes(serialization.Encoding.OpenSSH, OPENSSH).decode()


def dss_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-dss", b"\x01" * 64, b"\x02" * 20))
    return "ssh-dss " + base64.b64encode(blob).decode()


def ed25519_identity(path: Path, comment: str = "owner@laptop") -> str:
    """A fresh ed25519 key pair for an SSH client: the private key at ``path``
    (OpenSSH format, no passphrase, 0600 as ssh insists); the public key line."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fsutil.write_atomic(path, pem, mode=0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, OPENSSH)
    return public.decode() + f" {comment}"


@dataclass(frozen=True)
class SshClient:
    """OpenSSH's ``ssh`` as an owner runs it against one node: one identity,
    no agent, no config, a throwaway known_hosts (the first host key is
    accepted and kept), never a prompt, and a deadline on every run.
    ``wrap`` runs it elsewhere (``ip netns exec NAME``)."""

    identity: Path
    known_hosts: Path
    port: int
    wrap: Sequence[str] = ()
    host: str = "127.0.0.1"

    def argv(self, command: str) -> list[str]:
        options = {
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new",
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "ConnectTimeout": "30",
            "ServerAliveInterval": "10",
            "ServerAliveCountMax": "6",
        }
        flags = [f for k, v in options.items() for f in ("-o", f"{k}={v}")]
        ssh = which("ssh", "openssh-client")
        return [*self.wrap, ssh, "-F", "/dev/null", "-i", str(self.identity), *flags,
                "-p", str(self.port), f"root@{self.host}", command]  # fmt: skip

    def run(self, command: str, timeout: float = 180.0) -> subprocess.CompletedProcess[bytes]:
        """Log in and run ``command``; the finished process (not checked)."""
        return run(self.argv(command), check=False, capture=True, timeout=timeout)

    def host_key(self) -> str:
        """The SHA256 fingerprint of the host key ssh saw (and kept) for this node."""
        out = run(
            [which("ssh-keygen", "openssh-client"), "-l", "-f", self.known_hosts], capture=True
        )
        (line,) = out.stdout.decode().splitlines()
        return line.split()[1]
