"""Registry credentials and authentication challenges, the way Docker finds them.

Credentials come from the environment (``DISTBUILD_REGISTRY_USERNAME`` and
``DISTBUILD_REGISTRY_PASSWORD``) or Docker's ``config.json`` (``DOCKER_CONFIG``
or ``~/.docker``): an ``auths`` entry, or a ``docker-credential-*`` helper
named by ``credHelpers``/``credsStore``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.core.errors import DistbuildError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _auth_key(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000``, the way Docker matches ``auths``."""
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0]


def find_credentials(registry: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``registry``: the environment first, then Docker's config."""
    env = os.environ if env is None else env
    user, password = env.get("DISTBUILD_REGISTRY_USERNAME"), env.get("DISTBUILD_REGISTRY_PASSWORD")
    if user and password is not None:
        return Credentials(user, password, "DISTBUILD_REGISTRY_USERNAME/PASSWORD")
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DistbuildError(
            f"{path}: unreadable Docker config ({e})", hint="fix or remove the file"
        ) from None
    if not isinstance(config, dict):
        raise DistbuildError(f"{path}: a Docker config is a JSON object")
    # Docker's precedence: a helper named for this registry, the file, the default store.
    if helper := (config.get("credHelpers") or {}).get(registry):
        return _from_helper(str(helper), registry)
    for key, entry in (config.get("auths") or {}).items():
        if _auth_key(key) != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, sep, password = (
                    base64.b64decode(entry["auth"], validate=True).decode().partition(":")
                )
                if not sep or not user:
                    raise ValueError("no 'user:password'")
            except ValueError:
                raise DistbuildError(
                    f"{path}: auths.{key}.auth is not base64 of 'user:password'",
                    hint=f"log in again: docker login {registry}",
                ) from None
            return Credentials(user, password, str(path))
        if entry.get("username") and entry.get("password") is not None:
            return Credentials(entry["username"], entry["password"], str(path))
    if config.get("credsStore"):
        return _from_helper(str(config["credsStore"]), registry)
    return None


HELPER_TIMEOUT = 60.0  # seconds a credential helper may take (it may wait on a keyring)


def _from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask a docker-credential-* helper (the protocol Docker uses)."""
    from distbuild.core.run import run, which

    tool = which(f"docker-credential-{helper}", f"golang-docker-credential-helpers ({helper})")
    proc = run(
        [tool, "get"],
        input=registry.encode(),
        capture=True,
        check=False,
        timeout=HELPER_TIMEOUT,
        hint=f"docker-credential-{helper} did not answer; check its keyring or agent",
    )
    if proc.returncode != 0:
        return None  # the helper knows nothing about this registry
    try:
        data = json.loads(proc.stdout)
        return Credentials(data["Username"], data["Secret"], f"docker-credential-{helper}")
    except (ValueError, KeyError, TypeError):
        raise DistbuildError(f"docker-credential-{helper} answered something unreadable") from None


_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(rest)}
    params = {k: (v or "").replace('\\"', '"') for k, v in params.items()}
    return scheme.lower(), params
