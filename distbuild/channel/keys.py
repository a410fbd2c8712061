"""The key directory: Ed25519 keys for the four top-level TUF roles.

Layout of ``--keys DIR`` (mode 0700, every file 0600)::

    keys.json                 public keys, which role each serves, thresholds,
                              and retired (rotated-out) keys
    <role>-<keyid16>.pem      one PKCS#8 private key per key, encrypted when
                              DISTBUILD_KEY_PASSPHRASE was set at creation

Only the roles a command needs are unlocked: publishing needs targets,
snapshot and timestamp (online keys); creating a channel and rotating root
need root, which can otherwise be kept offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from distbuild.channel.model import ROLES
from distbuild.channel.tufapi import CryptoSigner, Key, Signer, SSlibKey
from distbuild.errors import DistbuildError, UsageError
from distbuild.fsutil import write_atomic

KEYS_FILE = "keys.json"
KEYS_FORMAT = 1
PASSPHRASE_ENV = "DISTBUILD_KEY_PASSPHRASE"


@dataclass(frozen=True)
class RoleKeys:
    """The keys of one role and how many of them must sign."""

    threshold: int
    keyids: tuple[str, ...]


@dataclass(frozen=True)
class KeyEntry:
    key: SSlibKey
    file: str  # relative to the key directory


class KeyStore:
    """A key directory: public keys, role assignments, and private keys on demand."""

    def __init__(
        self,
        path: Path,
        roles: Mapping[str, RoleKeys],
        keys: Mapping[str, KeyEntry],
        retired: Mapping[str, KeyEntry],
        passphrase: bytes | None = None,
    ) -> None:
        self.path = path
        self.roles = dict(roles)
        self.keys = dict(keys)
        self.retired = dict(retired)
        self._passphrase = passphrase
        self._signers: dict[str, Signer] = {}

    # -- creation and loading ------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        counts: Mapping[str, int],
        thresholds: Mapping[str, int],
        passphrase: bytes | None = None,
    ) -> KeyStore:
        """Create a key directory with fresh keys for every top-level role."""
        if (path / KEYS_FILE).exists():
            raise UsageError(
                f"{path} already holds keys",
                hint="use another directory, or 'distbuild keys rotate-root' to replace root keys",
            )
        _make_private_dir(path)
        store = cls(path, {}, {}, {}, passphrase)
        for role in ROLES:
            store._generate(role, counts.get(role, 1), thresholds.get(role, 1))
        store.save()
        return store

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> KeyStore:
        """Read ``keys.json``; private keys are read only when a signer is asked for."""
        file = path / KEYS_FILE
        if not file.is_file():
            raise UsageError(
                f"no keys at {path}",
                hint=f"create them with 'distbuild keys init --keys {path}', "
                "or point --keys / DISTBUILD_KEYS at your key directory",
            )
        try:
            data = json.loads(file.read_text())
            if data.get("format") != KEYS_FORMAT:
                raise ValueError(f"unsupported format {data.get('format')!r}")
            roles = {
                r: RoleKeys(int(v["threshold"]), tuple(v["keyids"]))
                for r, v in data["roles"].items()
            }
            keys = {k: _entry(k, v) for k, v in data["keys"].items()}
            retired = {k: _entry(k, v) for k, v in data.get("retired", {}).items()}
            if set(roles) != set(ROLES):
                raise ValueError(f"roles must be {', '.join(ROLES)}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DistbuildError(
                f"{file}: unreadable key file ({e})",
                hint="restore the key directory from your backup",
            ) from None
        return cls(path, roles, keys, retired, passphrase)

    def save(self) -> None:
        data = {
            "format": KEYS_FORMAT,
            "roles": {
                r: {"threshold": rk.threshold, "keyids": list(rk.keyids)}
                for r, rk in self.roles.items()
            },
            "keys": {k: _entry_dict(e) for k, e in self.keys.items()},
            "retired": {k: _entry_dict(e) for k, e in self.retired.items()},
        }
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        write_atomic(self.path / KEYS_FILE, text.encode(), mode=0o600)

    # -- use -------------------------------------------------------------------

    def public_keys(self, role: str) -> list[Key]:
        return [self.keys[k].key for k in self.roles[role].keyids]

    def signers(self, role: str) -> list[Signer]:
        """Signers for every key of ``role``; errors if a private key is missing."""
        return [self._signer(keyid, self.keys[keyid]) for keyid in self.roles[role].keyids]

    def signer_for(self, keyid: str) -> Signer | None:
        """A signer for any key this directory holds (current or retired), else None."""
        entry = self.keys.get(keyid) or self.retired.get(keyid)
        if entry is None or not (self.path / entry.file).is_file():
            return None
        return self._signer(keyid, entry)

    def rotate(self, role: str, count: int, threshold: int) -> None:
        """Replace the keys of ``role`` by new ones; the old ones are kept as retired."""
        old = self.roles[role].keyids
        for keyid in old:
            self.retired[keyid] = self.keys.pop(keyid)
        self._generate(role, count, threshold)
        self.save()

    # -- internals -----------------------------------------------------------

    def _generate(self, role: str, count: int, threshold: int) -> None:
        if count < 1:
            raise UsageError(f"{role} needs at least one key")
        if not 1 <= threshold <= count:
            raise UsageError(
                f"threshold {threshold} for {role} is not between 1 and its {count} key(s)",
                hint=f"give --{role}-keys N with N >= the threshold",
            )
        keyids = []
        for _ in range(count):
            private = Ed25519PrivateKey.generate()
            signer = CryptoSigner(private)
            public = signer.public_key
            file = f"{role}-{public.keyid[:16]}.pem"
            encryption = (
                BestAvailableEncryption(self._passphrase) if self._passphrase else NoEncryption()
            )
            pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
            write_atomic(self.path / file, pem, mode=0o600)
            self.keys[public.keyid] = KeyEntry(public, file)
            self._signers[public.keyid] = signer
            keyids.append(public.keyid)
        self.roles[role] = RoleKeys(threshold, tuple(keyids))

    def _signer(self, keyid: str, entry: KeyEntry) -> Signer:
        if keyid in self._signers:
            return self._signers[keyid]
        file = self.path / entry.file
        try:
            pem = file.read_bytes()
        except FileNotFoundError:
            raise DistbuildError(
                f"private key {file.name} is not in {self.path}",
                hint="bring the key back (root keys may be stored offline) and retry",
            ) from None
        try:
            private = load_pem_private_key(pem, self._passphrase)
        except TypeError:
            hint = (
                f"set {PASSPHRASE_ENV} to the passphrase the keys were created with"
                if self._passphrase is None
                else f"the key is not encrypted: unset {PASSPHRASE_ENV}"
            )
            raise DistbuildError(f"cannot unlock {file}", hint=hint) from None
        except ValueError:
            raise DistbuildError(
                f"cannot unlock {file}: wrong passphrase or damaged key",
                hint=f"check {PASSPHRASE_ENV}",
            ) from None
        signer = CryptoSigner(private, entry.key)
        self._signers[keyid] = signer
        return signer


def passphrase_from_env() -> bytes | None:
    """The key passphrase from ``DISTBUILD_KEY_PASSPHRASE`` (None when unset or empty)."""
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _entry(keyid: str, data: dict[str, Any]) -> KeyEntry:
    key = SSlibKey.from_dict(keyid, dict(data["key"]))
    return KeyEntry(key, str(data["file"]))


def _entry_dict(entry: KeyEntry) -> dict[str, Any]:
    return {"file": entry.file, "key": entry.key.to_dict()}
