"""The python-tuf and securesystemslib names distbuild uses, imported in one place.

Both libraries re-export these names without ``__all__``, which ``mypy
--strict`` (no implicit re-export) refuses; importing them here once keeps the
rest of the package free of ``type: ignore`` comments.
"""

from securesystemslib.signer import (  # type: ignore[attr-defined]
    CryptoSigner,
    Key,
    Signer,
    SSlibKey,
)
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.ngclient import Updater  # type: ignore[attr-defined]

__all__ = [
    "CryptoSigner",
    "Delegations",
    "Key",
    "MetaFile",
    "Metadata",
    "Role",
    "Root",
    "SSlibKey",
    "Signer",
    "Snapshot",
    "SuccinctRoles",
    "TargetFile",
    "Targets",
    "Timestamp",
    "Updater",
]
