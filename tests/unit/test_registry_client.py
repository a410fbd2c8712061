"""Image references, auth challenges and credential lookup (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from distbuild.core.errors import DistbuildError, UsageError
from distbuild.oci.auth import find_credentials, parse_challenge
from distbuild.oci.reference import Reference, is_loopback
from distbuild.oci.registry import _with_digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "127.0.0.1:5000/distbuild/toolbox:1.0.0",
            ("127.0.0.1:5000", "distbuild/toolbox", "1.0.0", None),
        ),
        ("localhost/toolbox", ("localhost", "toolbox", None, None)),
        ("registry.example/a/b/c", ("registry.example", "a/b/c", None, None)),
        ("[::1]:5000/x_y__z-w.v:Tag_1.2-rc", ("[::1]:5000", "x_y__z-w.v", "Tag_1.2-rc", None)),
        (f"localhost:5000/toolbox:1@{DIGEST}", ("localhost:5000", "toolbox", "1", DIGEST)),
        (f"localhost:5000/toolbox@{DIGEST}", ("localhost:5000", "toolbox", None, DIGEST)),
    ],
)
def test_references_parse(text: str, want: tuple[str, str, str | None, str | None]) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == want
    assert str(ref) == text


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("not a ref!!", "the registry host is missing"),
        ("toolbox:1.0.0", "the registry host is missing"),
        ("distbuild/toolbox", "there is no default registry"),
        ("localhost:5000/Toolbox", "repository names are lowercase"),
        ("localhost:5000/toolbox:.bad", "HOST[:PORT]/REPOSITORY[:TAG]"),
        ("localhost:5000/toolbox@sha256:short", "HOST[:PORT]/REPOSITORY[:TAG]"),
        ("localhost:5000/a//b", "HOST[:PORT]/REPOSITORY[:TAG]"),
    ],
)
def test_bad_references_say_how_to_write_one(text: str, hint: str) -> None:
    with pytest.raises(UsageError) as e:
        Reference.parse(text)
    assert e.value.hint is not None and hint in e.value.hint


def test_tags_are_checked() -> None:
    ref = Reference.parse("localhost:5000/toolbox:1.0.0")
    assert str(ref.with_tag("beta")) == "localhost:5000/toolbox:beta"
    with pytest.raises(UsageError):
        ref.with_tag("-nope")
    with pytest.raises(UsageError):
        ref.with_tag("x" * 129)


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.example:5000", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_registries_speak_plain_http(registry: str, loopback: bool) -> None:
    assert is_loopback(registry) is loopback


def test_challenges_parse() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="distbuild test"') == ("basic", {"realm": "distbuild test"})


def test_upload_location_keeps_its_query() -> None:
    url = _with_digest("http://h:1/v2/r/blobs/uploads/u?_state=a%2Bb", DIGEST)
    assert url == f"http://h:1/v2/r/blobs/uploads/u?_state=a%2Bb&digest=sha256%3A{'ab' * 32}"


def _config(tmp_path: Path, data: object) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(tmp_path)}


def test_environment_credentials_come_first(tmp_path: Path) -> None:
    env = _config(tmp_path, {"auths": {"h:1": {"username": "cfg", "password": "x"}}})
    env |= {"DISTBUILD_REGISTRY_USERNAME": "env", "DISTBUILD_REGISTRY_PASSWORD": "p"}
    creds = find_credentials("h:1", env)
    assert creds is not None and (creds.username, creds.password) == ("env", "p")
    assert "p" not in repr(creds)


@pytest.mark.parametrize("key", ["h:1", "http://h:1", "https://h:1/v1/"])
def test_docker_config_auths(tmp_path: Path, key: str) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    env = _config(tmp_path, {"auths": {"other:2": {"auth": "eDp5"}, key: {"auth": auth}}})
    creds = find_credentials("h:1", env)
    assert creds is not None and (creds.username, creds.password) == ("alice", "pa:ss")
    assert find_credentials("h:2", env) is None


def test_docker_config_default_is_in_home(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    auth = base64.b64encode(b"bob:pw").decode()
    (tmp_path / ".docker/config.json").write_text(json.dumps({"auths": {"h:1": {"auth": auth}}}))
    creds = find_credentials("h:1", {"HOME": str(tmp_path)})
    assert creds is not None and creds.username == "bob"


def test_broken_docker_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DistbuildError, match="unreadable Docker config"):
        find_credentials("h:1", {"DOCKER_CONFIG": str(tmp_path)})
    env = _config(tmp_path, {"auths": {"h:1": {"auth": "!!!"}}})
    with pytest.raises(DistbuildError, match="not base64"):
        find_credentials("h:1", env)


def test_no_docker_config_means_no_credentials(tmp_path: Path) -> None:
    assert find_credentials("h:1", {"DOCKER_CONFIG": str(tmp_path / "none")}) is None
