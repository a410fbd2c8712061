"""The registry client cuts off a registry that trickles its answer (real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.core.errors import RegistryError
from distbuild.oci.registry import RegistryClient
from tests.support.stall import Stall, raw_trickle, stalling_server, within

DIGEST = "sha256:" + "ab" * 32


def test_trickled_headers_are_cut_at_the_deadline() -> None:
    with raw_trickle(0.5) as host:
        client = RegistryClient(host, "distbuild/x", plain_http=True, retries=1, deadline=1.5)
        took, error = within(30, lambda: client.blob_exists(DIGEST))
        client.close()
    assert isinstance(error, RegistryError), error
    assert "cut off" in error.message and "failed 2 times" in error.message
    assert 2 * 1.5 <= took < 2 * 1.5 + 3, took  # two tries of 1.5 s, one back-off


def test_a_trickled_body_is_cut_at_the_deadline() -> None:
    with raw_trickle(0.2, body=True) as host:
        client = RegistryClient(host, "distbuild/x", plain_http=True, retries=0, deadline=1.5)
        took, error = within(30, lambda: client.get_manifest("latest"))
        client.close()
    assert isinstance(error, RegistryError), error
    assert "cut off" in error.message
    assert 1.5 - 0.1 <= took < 1.5 + 1.5, took


def test_trickled_upload_answer_is_cut(tmp_path: Path) -> None:
    with raw_trickle(0.5) as host:
        client = RegistryClient(host, "distbuild/x", plain_http=True, retries=0, deadline=1.5)
        took, error = within(30, lambda: client.upload_blob(b"x" * 10, DIGEST, 10))
        client.close()
    assert isinstance(error, RegistryError), error
    assert "cut off" in error.message
    assert took < 1.5 + 1.5, took


@pytest.mark.parametrize("method", ["tags", "manifest"])
def test_a_prompt_registry_is_not_cut(tmp_path: Path, method: str) -> None:
    # A static stand-in answering 404 promptly: the deadline must not fire on it.
    with stalling_server(tmp_path, Stall()) as url:
        host = url.removeprefix("http://")
        with RegistryClient(host, "x", plain_http=True, retries=0, deadline=1.5) as client:
            if method == "tags":
                assert client.tags() == []
            else:
                assert client.manifest_digest("latest") is None


def test_a_credential_helper_that_hangs_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distbuild.core.errors import DistbuildError
    from distbuild.oci import auth

    helper = tmp_path / "bin/docker-credential-stuck"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\nexec sleep 60\n")
    helper.chmod(0o755)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/config.json").write_text('{"credsStore": "stuck"}')
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    monkeypatch.setattr(auth, "HELPER_TIMEOUT", 1.0)
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    took, error = within(30, lambda: auth.find_credentials("127.0.0.1:5000", env))
    assert isinstance(error, DistbuildError), error
    assert "timed out" in error.message and error.hint and "stuck" in error.hint
    assert took < 1.0 + 2, took


def test_an_oversized_answer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distbuild.core.errors import FetchError
    from distbuild.oci import registry

    monkeypatch.setattr(registry, "ANSWER_LIMIT", 1000)
    (tmp_path / "v2/x/manifests").mkdir(parents=True)
    (tmp_path / "v2/x/manifests/latest").write_bytes(b"{" + b" " * 4000 + b"}")
    (tmp_path / "v2/x/manifests/small").write_bytes(b'{"mediaType": "x"}')
    with stalling_server(tmp_path, Stall()) as url:
        host = url.removeprefix("http://")
        with RegistryClient(host, "x", plain_http=True, retries=0) as client:
            with pytest.raises(FetchError, match="more than 1000 allowed"):
                client.get_manifest("latest")
            assert client.get_manifest("small").json() == {"mediaType": "x"}


def test_kept_alive_tls_connections_are_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.stall import tls_static

    (tmp_path / "www").mkdir()
    with tls_static(tmp_path / "www", tmp_path) as host:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "cert.pem"))
        with RegistryClient(host, "x", plain_http=False, retries=0, deadline=5) as client:
            for _ in range(3):  # the second and third reuse the first's TLS connection
                assert client.manifest_digest("latest") is None
                assert client.tags() == []
