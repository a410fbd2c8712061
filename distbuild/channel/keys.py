"""The key directory: Ed25519 keys for the four top-level TUF roles.

Layout of ``--keys DIR`` (mode 0700, every file 0600)::

    keys.json                 public keys, which role each serves, thresholds,
                              and retired (rotated-out) keys
    <role>-<keyid16>.pem      one PKCS#8 private key per key, encrypted when
                              DISTBUILD_KEY_PASSPHRASE was set at creation

Only the roles a command needs are unlocked: publishing needs targets,
snapshot and timestamp (online keys); creating a channel and rotating root
need root, which can otherwise be kept offline. ``keys export-online`` copies
the online keys into a directory of their own for CI; publish, promote and
refresh refuse a directory holding root private keys unless allowed.

The directory is hostile input like any other: a private key file or the
directory that group or others can read is refused (as ssh does), key file
names must be plain names inside the directory, and a private key must match
the public key ``keys.json`` lists for it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
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
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.core.fsutil import write_atomic

KEYS_FILE = "keys.json"
KEYS_FORMAT = 1
PASSPHRASE_ENV = "DISTBUILD_KEY_PASSPHRASE"
ALLOW_ROOT_ENV = "DISTBUILD_ALLOW_ROOT_KEYS"
# The roles CI signs with; hash bins are signed by the targets keys.
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
_KEY_FILE = re.compile(r"[a-z]+-[0-9a-f]{16}\.pem")
_MAX_FILE = 1 << 20  # keys.json and PEM files are a few KiB


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
        *,
        allow_root_keys: bool = False,
    ) -> None:
        self.path = path
        self.roles = dict(roles)
        self.keys = dict(keys)
        self.retired = dict(retired)
        self.allow_root_keys = allow_root_keys
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
        *,
        allow_root_keys: bool = False,
    ) -> KeyStore:
        """Create a key directory with fresh keys for every top-level role."""
        if (path / KEYS_FILE).exists():
            raise UsageError(
                f"{path} already holds keys",
                hint="use another directory, or 'distbuild keys rotate-root' to replace root keys",
            )
        _make_private_dir(path)
        store = cls(path, {}, {}, {}, passphrase, allow_root_keys=allow_root_keys)
        for role in ROLES:
            store._generate(role, counts.get(role, 1), thresholds.get(role, 1))
        store.save()
        return store

    @classmethod
    def load(
        cls, path: Path, passphrase: bytes | None = None, *, allow_root_keys: bool = False
    ) -> KeyStore:
        """Read ``keys.json``; private keys are read only when a signer is asked for."""
        file = path / KEYS_FILE
        if not file.is_file():
            raise UsageError(
                f"no keys at {path}",
                hint=f"create them with 'distbuild keys init --keys {path}', "
                "or point --keys / DISTBUILD_KEYS at your key directory",
            )
        _check_private_dir(path)
        try:
            data = json.loads(_read_private(file, public=True))
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
            for r, rk in roles.items():
                unknown = [k for k in rk.keyids if k not in keys]
                if unknown or not 1 <= rk.threshold <= len(rk.keyids):
                    raise ValueError(f"role {r}: unknown keys or bad threshold")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DistbuildError(
                f"{file}: unreadable key file ({e})",
                hint="restore the key directory from your backup",
            ) from None
        return cls(path, roles, keys, retired, passphrase, allow_root_keys=allow_root_keys)

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

    def root_key_files(self) -> list[str]:
        """The private root key files (current or retired) present in the directory."""
        entries = [self.keys[k] for k in self.roles["root"].keyids]
        entries += [e for e in self.retired.values() if e.file.startswith("root-")]
        return sorted({e.file for e in entries if (self.path / e.file).exists()})

    def require_online(self, action: str) -> None:
        """Refuse to ``action`` with a directory that holds root private keys, unless allowed.

        Root keys let whoever holds them replace every key of every channel;
        a CI job that publishes needs only the online ones.
        """
        found = self.root_key_files()
        if found and not self.allow_root_keys:
            raise DistbuildError(
                f"{self.path} holds root private keys ({', '.join(found)}); "
                f"{action} needs only the online keys",
                hint=f"export them: distbuild keys export-online --keys {self.path} --out DIR, "
                f"and use --keys DIR (or pass --allow-root-keys / set {ALLOW_ROOT_ENV}=1)",
            )

    def export_online(self, dest: Path) -> None:
        """Write a key directory with every public key but only the online private keys."""
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise UsageError(
                f"{dest} exists and is not an empty directory",
                hint="export into a new directory",
            )
        keyids = [k for role in ONLINE_ROLES for k in self.roles[role].keyids]
        for keyid in keyids:
            self._signer(keyid, self.keys[keyid])  # a broken source key fails before writing
        _make_private_dir(dest)
        online = KeyStore(dest, self.roles, self.keys, {})
        for keyid in keyids:
            file = self.keys[keyid].file
            write_atomic(dest / file, _read_private(self.path / file), mode=0o600)
        online.save()

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
            pem = _read_private(file)
        except FileNotFoundError:
            raise DistbuildError(
                f"private key {file.name} is not in {self.path}",
                hint="bring the key back (root keys may be stored offline) and retry",
            ) from None
        try:
            private = load_pem_private_key(pem, self._passphrase)
        except UnsupportedAlgorithm:
            raise DistbuildError(
                f"{file} is not an Ed25519 private key", hint="restore the key from your backup"
            ) from None
        except TypeError:
            hint = (
                f"set {PASSPHRASE_ENV} to the passphrase the keys were created with"
                if self._passphrase is None
                else f"the key is not encrypted: unset {PASSPHRASE_ENV}"
            )
            raise DistbuildError(f"cannot unlock {file}", hint=hint) from None
        except ValueError:
            raise DistbuildError(
                f"cannot unlock {file}: wrong passphrase, damaged key, or not a private key",
                hint=f"check {PASSPHRASE_ENV}, and that the file holds the PEM private key "
                "'keys init' wrote",
            ) from None
        try:
            signer = CryptoSigner(private, entry.key)
        except Exception:  # securesystemslib: KeyMismatchError, ValueError (other key type)
            raise DistbuildError(
                f"{file} does not hold the private key of {keyid[:16]} ({self._whose(private)})",
                hint="key files were swapped or replaced; restore the key directory from "
                "your backup",
            ) from None
        self._signers[keyid] = signer
        return signer

    def _whose(self, private: object) -> str:
        """Name the key a private key file really holds, for error messages."""
        try:
            public = CryptoSigner(private).public_key  # type: ignore[arg-type]
        except Exception:
            return f"it holds a {type(private).__name__.lstrip('_')}, not an Ed25519 key"
        for keyid, entry in {**self.retired, **self.keys}.items():
            if entry.key.keyval == public.keyval:
                return f"it holds {entry.file.partition('-')[0]} key {keyid[:16]}"
        return f"it holds key {public.keyid[:16]}, which keys.json does not list"


def passphrase_from_env() -> bytes | None:
    """The key passphrase from ``DISTBUILD_KEY_PASSPHRASE`` (None when unset or empty)."""
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _unprotected(path: Path, mode: int, fix: str) -> DistbuildError:
    return DistbuildError(
        f"UNPROTECTED PRIVATE KEY FILE: {path} is accessible by group or others "
        f"(mode {stat.S_IMODE(mode):04o}); refusing to use it",
        hint=f"chmod {fix} {path} (and check who could have copied it)",
    )


def _check_private_dir(path: Path) -> None:
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise _unprotected(path, st.st_mode, "700")


def _read_private(path: Path, *, public: bool = False) -> bytes:
    """Read a key directory file: no links, no devices or FIFOs, no group/other access.

    ``public`` (keys.json) tolerates read access by others but not write access.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DistbuildError(
            f"cannot read {path}: {e.strerror}",
            hint="key files must be regular files in the key directory, not links",
        ) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DistbuildError(
            f"{path} is not a regular file", hint="restore the key directory from your backup"
        )
    with os.fdopen(fd, "rb") as f:
        if st.st_mode & (0o022 if public else 0o077):
            raise _unprotected(path, st.st_mode, "644" if public else "600")
        data = f.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise DistbuildError(f"{path} is too large for a key file")
    return data


def _entry(keyid: str, data: dict[str, Any]) -> KeyEntry:
    key = SSlibKey.from_dict(keyid, dict(data["key"]))
    file = str(data["file"])
    if not _KEY_FILE.fullmatch(file):
        raise ValueError(f"key file name {file!r} is not ROLE-KEYID.pem")
    return KeyEntry(key, file)


def _entry_dict(entry: KeyEntry) -> dict[str, Any]:
    return {"file": entry.file, "key": entry.key.to_dict()}
