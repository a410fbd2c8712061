"""Real OCI registries for tests: ``docker-registry`` (distribution v2.8) on 127.0.0.1.

``RegistryServer`` runs one registry process with its storage, config and log
in a temporary directory. Authentication is htpasswd (bcrypt, made with
``htpasswd -Bbn``), bearer tokens from a ``TokenServer`` started next to it,
or none. ``consistency_problems`` reads the registry's storage directly and
reports any manifest or tag that points at something the registry lacks.

The session fixture ``registry`` (htpasswd auth) yields a started server;
``registry.spawn(auth=...)`` starts more ("htpasswd", "token" or "none"),
stopped with it. tests/integration/conftest.py imports the fixture, so any
integration test can ask for ``registry``; ``registry.env()`` gives ``distbuild``
its credentials and ``registry.creds()`` is skopeo's ``--creds``.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import json
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from distbuild.core.run import popen, run, which
from distbuild.oci import layout as oci
from distbuild.record import Artifact, BuildRecord

CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
{auth}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryStartError(RuntimeError):
    pass


@dataclass
class RegistryServer:
    """One ``docker-registry serve`` under ``root``; ``start()``, then ``stop()``."""

    root: Path
    auth: str = "htpasswd"  # "htpasswd", "token" or "none"
    username: str = "distbuild"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    port: int = 0
    token_server: TokenServer | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _spawned: list[RegistryServer] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        """``host:port``, the registry part of an image reference."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log(self) -> Path:
        return self.root / "registry.log"

    def env(self) -> dict[str, str]:
        """The environment that gives ``distbuild push`` this registry's credentials."""
        return {
            "DISTBUILD_REGISTRY_USERNAME": self.username,
            "DISTBUILD_REGISTRY_PASSWORD": self.password,
        }

    def creds(self) -> str:
        """``user:password`` for skopeo's ``--creds``."""
        return f"{self.username}:{self.password}"

    def start(self, timeout: float = 30) -> RegistryServer:
        which("docker-registry", "docker-registry")
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        for _ in range(3):  # a port picked free may be taken before the registry binds it
            self.port = free_port()
            (self.root / "config.yml").write_text(
                CONFIG.format(
                    storage=self.storage,
                    port=self.port,
                    secret=secrets.token_hex(16),
                    auth=self._auth_config(),
                )
            )
            with self.log.open("ab") as log:
                self._proc = popen(
                    ["docker-registry", "serve", self.root / "config.yml"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            if self._wait(timeout):
                return self
        raise RegistryStartError(f"docker-registry did not start:\n{self._tail()}")

    def _auth_config(self) -> str:
        if self.auth == "htpasswd":
            proc = run(
                [which("htpasswd", "apache2-utils"), "-Bbn", self.username, self.password],
                capture=True,
            )
            (self.root / "htpasswd").write_bytes(proc.stdout)
            return (
                "auth:\n  htpasswd:\n    realm: distbuild-test\n"
                f"    path: {self.root / 'htpasswd'}\n"
            )
        if self.auth == "token":
            if self.token_server is None:
                self.token_server = TokenServer(self.root / "token", self.username, self.password)
                self.token_server.start()
            t = self.token_server
            return (
                f"auth:\n  token:\n    realm: {t.realm}\n    service: {t.service}\n"
                f"    issuer: {t.issuer}\n    rootcertbundle: {t.cert}\n"
            )
        return ""

    def _wait(self, timeout: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                if requests.get(f"{self.url}/v2/", timeout=2).status_code in (200, 401):
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self._stop_process()
        raise RegistryStartError(f"docker-registry did not answer in {timeout}s:\n{self._tail()}")

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def _stop_process(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def spawn(self, auth: str = "htpasswd") -> RegistryServer:
        """Start another registry next to this one; it stops when this one does."""
        other = RegistryServer(
            self.root.with_name(f"{self.root.name}-{len(self._spawned) + 1}"), auth=auth
        )
        self._spawned.append(other)
        return other.start()

    def stop(self) -> None:
        for other in self._spawned:
            other.stop()
        self._stop_process()
        if self.token_server is not None:
            self.token_server.stop()

    # -- what the registry holds, read from its storage ------------------------

    def _repo_dir(self, repository: str) -> Path:
        return self.storage / "docker/registry/v2/repositories" / repository

    def _blob_data(self, digest: str) -> Path:
        hexd = digest.split(":")[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def _linked(self, repository: str, kind: str, digest: str) -> bool:
        hexd = digest.split(":")[1]
        link = self._repo_dir(repository) / kind / "sha256" / hexd / "link"
        return link.is_file() and self._blob_data(digest).is_file()

    def manifests(self, repository: str) -> list[str]:
        """Digests of every manifest the repository holds, tagged or not."""
        revisions = self._repo_dir(repository) / "_manifests/revisions/sha256"
        return sorted(f"sha256:{p.name}" for p in revisions.glob("*") if (p / "link").is_file())

    def blobs(self, repository: str) -> list[str]:
        """Digests of the blobs linked into the repository (layers, configs, manifests)."""
        layers = self._repo_dir(repository) / "_layers/sha256"
        return sorted(f"sha256:{p.name}" for p in layers.glob("*") if (p / "link").is_file())

    def tags(self, repository: str) -> dict[str, str]:
        tags = self._repo_dir(repository) / "_manifests/tags"
        return {
            p.name: (p / "current/link").read_text().strip()
            for p in tags.glob("*")
            if (p / "current/link").is_file()
        }

    def consistency_problems(self, repository: str) -> list[str]:
        """Every tag or manifest in ``repository`` that points at something missing."""
        problems = []
        for tag, digest in self.tags(repository).items():
            if not self._linked(repository, "_manifests/revisions", digest):
                problems.append(f"tag {tag} → missing manifest {digest}")
        for digest in self.manifests(repository):
            data = self._blob_data(digest)
            if not data.is_file():
                problems.append(f"manifest {digest} has no content")
                continue
            content = json.loads(data.read_bytes())
            for child in content.get("manifests", []):
                if not self._linked(repository, "_manifests/revisions", child["digest"]):
                    problems.append(f"index {digest} → missing manifest {child['digest']}")
            for blob in [content.get("config"), *content.get("layers", [])]:
                if blob and not self._linked(repository, "_layers", blob["digest"]):
                    problems.append(f"manifest {digest} → missing blob {blob['digest']}")
        return problems


# -- bearer tokens -------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """A token endpoint for ``docker-registry``'s ``auth: token`` (Docker's token protocol).

    It checks Basic credentials and signs RS256 JWTs whose ``x5c`` header carries
    a self-signed certificate; the registry trusts that certificate through its
    ``rootcertbundle``. It grants whatever the scope asks for.
    """

    root: Path
    username: str
    password: str
    service: str = "distbuild-test-registry"
    issuer: str = "distbuild-test-issuer"
    issued: list[str] = field(default_factory=list)  # the scopes of tokens handed out
    refused: int = 0

    def start(self) -> TokenServer:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.root.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distbuild test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self.root / "token-ca.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            self.refused += 1
            h.send_response(401)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
            self.issued.append(scope)
        body = json.dumps({"token": self._jwt(access), "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _jwt(self, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": self.username,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64url(signature)}"


# -- a small build of our own, for tests that need no Debian packages ----------------


def _tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible gzipped tar and the diff_id of its uncompressed stream."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def make_build(
    out: Path, name: str = "tiny", version: str = "1.0.0", payload: bytes | None = None
) -> Path:
    """Write a real one-arch build (OCI layout + build.json) of a single-file image.

    ``payload`` is the file's content (random by default, so each build pushes
    new blobs).
    """
    directory = out / name / version
    layout = oci.Layout(directory / "oci").init()
    layer, diff_id = _tar_gz(
        {"hello.txt": payload if payload is not None else secrets.token_bytes(4096)}
    )
    created = "2025-11-27T00:00:00Z"
    platform = {"architecture": "amd64", "os": "linux"}
    config = {
        "created": created,
        **platform,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_desc = layout.put(oci.CONFIG, oci.canonical(config))
    layer_desc = layout.put(oci.LAYER_GZIP, layer)
    manifest = oci.image_manifest(config_desc, [layer_desc], {oci.CREATED: created})
    manifest_desc = layout.put(oci.MANIFEST, oci.canonical(manifest))
    manifest_desc["platform"] = platform
    index_desc = oci.write_index(layout, [manifest_desc], {oci.CREATED: created}, version)
    record = BuildRecord(name, version, 1764201600)
    record.oci = {
        "layout": "oci",
        "ref": version,
        "index": index_desc["digest"],
        "index_size": index_desc["size"],
    }
    record.artifacts.append(
        Artifact(
            "amd64",
            "oci",
            str(layout.blob_path(manifest_desc["digest"]).relative_to(directory)),
            manifest_desc["digest"].split(":")[1],
            manifest_desc["size"],
        )
    )
    record.write(directory)
    return directory


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A docker-registry on 127.0.0.1 with htpasswd auth, for the whole session."""
    server = RegistryServer(tmp_path_factory.mktemp("registry") / "main").start()
    try:
        yield server
    finally:
        server.stop()
