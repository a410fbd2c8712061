"""``distbuild verify`` against a real CI-signed bundle from the public-good Sigstore.

The bundle is kept in tests/fixtures/sigstore (see its README); the wheel it signs is
downloaded from PyPI once per session (so: ``network``). Every verification here runs
with outbound connections refused, so "offline" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sigstore._internal.tuf import DEFAULT_TUF_URL, STAGING_TUF_URL

from tests.conftest import run_cli
from tests.support.sigstore import BUNDLE, IDENTITY, ISSUER

pytestmark = pytest.mark.network


@pytest.fixture
def wheel(signed_wheel: Path) -> Path:
    return signed_wheel


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Refuse (and record) every outbound connection the code under test tries."""
    tried: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        tried.append(address)
        raise OSError("network use in an offline verification")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield tried
    assert tried == [], f"verification tried to reach {tried}"


def verify(
    capsys: pytest.CaptureFixture[str], artifact: Path, *extra: str, bundle: Path = BUNDLE
) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = run_cli("verify", artifact, "--bundle", bundle, *extra)
    out, err = capsys.readouterr()
    return rc, out, err


def test_right_identity_passes(wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = verify(capsys, wheel, "--identity", IDENTITY, "--issuer", ISSUER, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert result["identity"] == IDENTITY
    assert result["log_index"] > 0
    assert result["integrated_time"].startswith("2024-")
    assert "packaged in sigstore" in result["trusted_root"]


def test_changed_byte_fails(
    wheel: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed = tmp_path / wheel.name
    changed.write_bytes(data)
    rc, out, err = verify(capsys, changed, "--identity", IDENTITY, "--issuer", ISSUER)
    assert rc != 0
    assert "OK" not in out
    assert "error: " in err and "bytes are not the ones signed" in err
    assert "\nhint: " in err


def test_other_identity_fails(wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = IDENTITY.replace("v0.1.2", "v0.1.3")
    rc, out, err = verify(capsys, wheel, "--identity", other, "--issuer", ISSUER)
    assert rc != 0 and "OK" not in out
    assert f"error: {BUNDLE}: not signed by {other}" in err
    assert f"hint: the bundle was signed by {IDENTITY}" in err  # says who did sign it


def test_other_issuer_fails(wheel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = verify(
        capsys, wheel, "--identity", IDENTITY, "--issuer", "https://accounts.google.com"
    )
    assert rc != 0 and "OK" not in out
    assert f"signed through issuer {ISSUER}, not https://accounts.google.com" in err
    assert "hint: " in err


def test_trusted_root_is_the_anchor(
    wheel: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The packaged production root given explicitly passes; another instance's root fails."""
    store = importlib.resources.files("sigstore._store")
    prod = tmp_path / "production.json"
    prod.write_bytes(
        store.joinpath(quote(DEFAULT_TUF_URL, safe=""), "trusted_root.json").read_bytes()
    )
    staging = tmp_path / "staging.json"
    staging.write_bytes(
        store.joinpath(quote(STAGING_TUF_URL, safe=""), "trusted_root.json").read_bytes()
    )
    ok = ("--identity", IDENTITY, "--issuer", ISSUER)
    rc, out, err = verify(capsys, wheel, *ok, "--trusted-root", prod)
    assert rc == 0, err
    rc, out, err = verify(capsys, wheel, *ok, "--trusted-root", staging)
    assert rc != 0 and "OK" not in out
    assert "error: " in err and "hint: " in err


def test_bundle_next_to_artifact_is_the_default(
    wheel: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    shutil.copy(wheel, tmp_path / wheel.name)
    capsys.readouterr()
    rc = run_cli("verify", tmp_path / wheel.name, "--identity", IDENTITY, "--issuer", ISSUER)
    assert rc != 0  # no bundle next to it yet
    assert "hint: name the bundle with --bundle" in capsys.readouterr().err
    shutil.copy(BUNDLE, tmp_path / BUNDLE.name)
    rc = run_cli("verify", tmp_path / wheel.name, "--identity", IDENTITY, "--issuer", ISSUER)
    assert rc == 0


def test_verifies_in_a_namespace_without_network(wheel: Path, no_network: list[object]) -> None:
    """The real command, in a fresh network namespace (no interfaces but lo)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    argv = ["unshare", "-rn", sys.executable, "-m", "distbuild.cli.main", "verify", str(wheel)]
    proc = subprocess.run(
        [*argv, "--bundle", str(BUNDLE), "--identity", IDENTITY, "--issuer", ISSUER],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: ")
