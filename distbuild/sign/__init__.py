"""Signatures of release artifacts (Sigstore bundles)."""
