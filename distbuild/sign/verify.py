"""Offline verification of Sigstore bundles (keyless signatures made in CI).

The trust anchor is a pinned Sigstore trusted root: by default the production
one that the installed ``sigstore`` package ships, or a file the user gives.
Nothing here touches the network: sigstore's TUF refresh of the trusted root
is never started, and a bundle must carry its transparency-log entry (with
its inclusion promise or proof), as bundles from ``sigstore sign`` do.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.x509 import (
    ObjectIdentifier,
    RFC822Name,
    SubjectAlternativeName,
    UniformResourceIdentifier,
)

from distbuild.core.errors import DistbuildError

# Fulcio's certificate extensions naming the OIDC issuer (v2 form, then the legacy one).
_ISSUER_OIDS = ("1.3.6.1.4.1.57264.1.8", "1.3.6.1.4.1.57264.1.1")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Verified:
    """What a successful verification established."""

    artifact: Path
    sha256: str
    identity: str
    issuer: str
    log_index: int
    integrated_time: int  # when the transparency log saw the signature (epoch seconds)
    trusted_root: str  # where the trust anchor came from


def packaged_trusted_root() -> tuple[bytes, str]:
    """The production trusted root shipped inside the installed sigstore package."""
    from sigstore import __version__ as sigstore_version
    from sigstore._internal.tuf import DEFAULT_TUF_URL

    resource = importlib.resources.files("sigstore._store").joinpath(
        quote(DEFAULT_TUF_URL, safe=""), "trusted_root.json"
    )
    try:
        return resource.read_bytes(), f"the production root packaged in sigstore {sigstore_version}"
    except OSError:
        raise DistbuildError(
            f"the installed sigstore {sigstore_version} ships no production trusted root",
            hint="pass one with --trusted-root FILE (a trusted_root.json you trust)",
        ) from None


def load_trusted_root(path: Path | None) -> tuple[Any, str]:
    """The TrustedRoot to verify against, and a phrase saying where it came from."""
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot.v1 import TrustedRoot as RawTrustedRoot

    if path is not None:
        data, origin = _read(path, "trusted root"), str(path)
    else:
        data, origin = packaged_trusted_root()
    try:
        return TrustedRoot(RawTrustedRoot.from_json(data)), origin
    except Exception as e:  # pydantic, JSON and sigstore's own checks all land here
        raise DistbuildError(
            f"{origin} is not a usable Sigstore trusted root ({e.__class__.__name__})",
            hint="give a trusted_root.json (media type application/vnd.dev.sigstore.trustedroot+json)",
        ) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DistbuildError(
            f"cannot read the {what} {path}: {e.strerror}",
            hint=f"check the path of the {what}",
        ) from None


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DistbuildError(
            f"cannot read the artifact {path}: {e.strerror}", hint="check the artifact's path"
        ) from None
    return h.digest()


def _signer(cert: object) -> tuple[list[str], str | None]:
    """The identities (SANs) and the OIDC issuer a Fulcio certificate names."""
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
        names = [
            *san.get_values_for_type(UniformResourceIdentifier),
            *san.get_values_for_type(RFC822Name),
        ]
    except x509.ExtensionNotFound:
        names = []
    issuer = None
    for oid in _ISSUER_OIDS:
        try:
            ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(oid)).value
        except x509.ExtensionNotFound:
            continue
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        # 1.8 is a DER UTF8String; the legacy 1.1 is the raw string.
        if oid.endswith(".8") and raw[:1] == b"\x0c":
            raw = raw[2:] if raw[1] < 0x80 else raw[2 + (raw[1] & 0x7F) :]
        issuer = raw.decode(errors="replace")
        break
    return names, issuer


def verify(
    artifact: Path,
    bundle_path: Path,
    *,
    identity: str,
    issuer: str,
    trusted_root: Path | None = None,
) -> Verified:
    """Verify ``artifact`` against ``bundle_path`` for exactly this identity and issuer.

    Raises DistbuildError, with a hint naming what the bundle does say, when
    the bytes, the identity, the issuer or the certificate chain do not hold.
    """
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import VerificationError
    from sigstore.hashes import Hashed
    from sigstore.verify import Verifier, policy
    from sigstore_models.common.v1 import HashAlgorithm

    root, root_origin = load_trusted_root(trusted_root)
    bundle = _load_bundle(bundle_path)
    digest = _sha256(artifact)
    try:
        Verifier(trusted_root=root).verify_artifact(
            Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest),
            bundle,
            policy.Identity(identity=identity, issuer=issuer),
        )
    except VerificationError as e:
        raise _refusal(
            str(e), artifact, bundle_path, bundle, identity, issuer, root_origin
        ) from None
    except SigstoreError as e:
        raise DistbuildError(
            f"{bundle_path}: Sigstore verification failed: {e}",
            hint=f"the trusted root used was {root_origin}",
        ) from None
    entry = bundle.log_entry._inner
    return Verified(
        artifact=artifact,
        sha256=digest.hex(),
        identity=identity,
        issuer=issuer,
        log_index=int(entry.log_index),
        integrated_time=int(entry.integrated_time or 0),
        trusted_root=root_origin,
    )


def _load_bundle(path: Path) -> Any:
    """The sigstore Bundle in ``path``; DistbuildError if it is not one."""
    from sigstore.models import Bundle, InvalidBundle

    try:
        return Bundle.from_json(_read(path, "bundle"))
    except InvalidBundle as e:
        raise DistbuildError(
            f"{path} is not a valid Sigstore bundle: {str(e).splitlines()[0]}",
            hint="pass the .sigstore.json written by 'sigstore sign --bundle'",
        ) from None
    except ValueError as e:
        raise DistbuildError(
            f"{path} is not a Sigstore bundle ({e.__class__.__name__})",
            hint="pass the .sigstore.json written by 'sigstore sign --bundle'",
        ) from None


def _refusal(
    message: str,
    artifact: Path,
    bundle_path: Path,
    bundle: Any,
    identity: str,
    issuer: str,
    root_origin: str,
) -> DistbuildError:
    """The error for a failed verification, saying what the bundle does say."""
    names, cert_issuer = _signer(bundle.signing_certificate)
    signed_by = f"{', '.join(names) or 'no identity'} (issuer {cert_issuer or 'unknown'})"
    if "digest mismatch" in message or "Signature is invalid" in message:
        return DistbuildError(
            f"{artifact}: its bytes are not the ones signed in {bundle_path}",
            hint="the artifact changed after signing, or the bundle belongs to another "
            "file; fetch both again from the release",
        )
    if "OIDCIssuer" in message:
        return DistbuildError(
            f"{bundle_path}: signed through issuer {cert_issuer or 'unknown'}, not {issuer}",
            hint=f"the bundle was signed by {signed_by}; check --issuer",
        )
    if "SANs do not match" in message:
        return DistbuildError(
            f"{bundle_path}: not signed by {identity}",
            hint=f"the bundle was signed by {signed_by}; check --identity "
            "(for GitHub Actions: <repo URL>/.github/workflows/<file>@<ref>)",
        )
    return DistbuildError(
        f"{bundle_path}: Sigstore verification failed: {message}",
        hint=f"the trusted root used was {root_origin}; a bundle from another Sigstore "
        "instance needs that instance's root (--trusted-root)",
    )
