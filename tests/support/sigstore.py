"""The real Sigstore fixture: a bundle kept in tests/fixtures/sigstore, and the PyPI
wheel it signs, downloaded once per session (tests using it are marked ``network``)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sigstore"
WHEEL_NAME = "rfc8785-0.1.2-py3-none-any.whl"
WHEEL_REQUIREMENT = "rfc8785==0.1.2"
WHEEL_SHA256 = "c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
BUNDLE = FIXTURES / f"{WHEEL_NAME}.sigstore.json"
IDENTITY = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="session")
def signed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The released wheel the fixture bundle signs, from PyPI, checked by sha256."""
    dest = tmp_path_factory.mktemp("sigstore-wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir",
         "--only-binary", ":all:", WHEEL_REQUIREMENT, "-d", str(dest)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        pytest.fail(f"could not download {WHEEL_REQUIREMENT} from PyPI: {proc.stderr[-2000:]}")
    got = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert got == WHEEL_SHA256, f"PyPI served {WHEEL_NAME} with sha256 {got}"
    return wheel
