"""SSH public keys of each type, freshly made, as an owner would paste them."""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
