"""The registry client cuts off a registry that trickles its answer (real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.errors import RegistryError
from distbuild.oci.registry import RegistryClient
from tests.stall_support import Stall, raw_trickle, stalling_server, within

DIGEST = "sha256:" + "ab" * 32


def test_trickled_headers_are_cut_at_the_deadline() -> None:
    with raw_trickle(0.5) as host:
        client = RegistryClient(host, "distbuild/x", plain_http=True, retries=1, deadline=1.5)
        took, error = within(30, lambda: client.blob_exists(DIGEST))
        client.close()
    assert isinstance(error, RegistryError), error
    assert "cut off" in error.message and "failed 2 times" in error.message
    assert 2 * 1.5 <= took < 2 * 1.5 + 3, took  # two tries of 1.5 s, one back-off


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
