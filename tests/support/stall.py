"""Servers that stall a client in ways socket timeouts do not catch, on 127.0.0.1.

* :func:`stalling_server` serves a directory like ``distbuild serve``, except
  that for paths matching ``trickle`` it sends its response headers one byte
  every ``interval`` seconds (never finishing them), and for paths matching
  ``fail`` it answers ``503`` the first ``failures`` times (or always).
* :func:`raw_trickle` is a bare socket server that reads a request and then
  trickles a header line byte by byte: for clients that are not given a URL
  of a channel (the registry client).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from distbuild.channel.serve import RepoHandler

TRICKLE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Padding: " + b"x" * 4096 + b"\r\n\r\nbody"


@dataclass
class Stall:
    trickle: str | None = None  # path pattern whose headers are trickled
    interval: float = 0.5
    fail: str | None = None  # path pattern answered 503
    failures: int = 1 << 30  # how many times (default: always)
    failed: int = 0
    trickled: int = 0


# Whole headers at once, then a body one byte at a time.
BODY_TRICKLE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"


def _trickle(
    sock: socket.socket, interval: float, stop: threading.Event, body: bool = False
) -> None:
    with contextlib.suppress(OSError):
        if body:
            sock.sendall(BODY_TRICKLE)
        for byte in TRICKLE if not body else b"{" + b" " * 4095:
            if stop.wait(interval):
                return
            sock.sendall(bytes([byte]))


class _StallHandler(RepoHandler):
    stall: Stall
    stop: threading.Event

    def send_head(self) -> Any:
        s = self.stall
        if s.trickle and re.search(s.trickle, self.path):
            s.trickled += 1
            _trickle(self.connection, s.interval, self.stop)
            self.close_connection = True
            return None
        if s.fail and re.search(s.fail, self.path) and s.failed < s.failures:
            s.failed += 1
            self.send_error(503, "try later")
            return None
        return super().send_head()

    def do_POST(self) -> None:
        s = self.stall
        if s.trickle and re.search(s.trickle, self.path):
            s.trickled += 1
            _trickle(self.connection, s.interval, self.stop)
            self.close_connection = True
            return
        self.send_error(405, "no POST here")

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()


@contextmanager
def stalling_server(directory: Path, stall: Stall) -> Iterator[str]:
    """Serve ``directory`` with ``stall``'s faults; yields the base URL."""
    stop = threading.Event()
    handler = type("Handler", (_StallHandler,), {"stall": stall, "stop": stop})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"http://{host!s}:{port}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextmanager
def _accepting(
    listener: socket.socket, stop: threading.Event, serve: Callable[[socket.socket], None]
) -> Iterator[str]:
    """Accept on ``listener`` (timeout set) until the block ends, one thread a connection."""

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    host, port = listener.getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextmanager
def raw_trickle(interval: float = 0.5, body: bool = False) -> Iterator[str]:
    """A server that reads a request's headers and trickles an answer's (with ``body``:
    sends them whole and trickles the body); yields host:port."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(4096)
                if not piece:
                    return
                data += piece
            _trickle(conn, interval, stop, body)

    with _accepting(listener, stop, serve) as address:
        yield address


def elapsed(start: float) -> float:
    return time.monotonic() - start


def within(seconds: float, fn: Any) -> tuple[float, BaseException | None]:
    """Run ``fn()`` in a thread; (seconds taken, what it raised). A call still running
    after ``seconds`` fails the test instead of hanging it (the thread is left behind)."""
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the test
            box[0] = e

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: no deadline"
    return elapsed(start), box[0]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files), for a loopback TLS server."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def tls_trickle(
    directory: Path, interval: float = 0.5, stall_handshake: bool = False
) -> Iterator[str]:
    """A TLS server on 127.0.0.1 that trickles its answer's headers (or never finishes
    the handshake); yields host:port. Its certificate is ``directory/cert.pem``."""
    import ssl

    cert, key = self_signed(directory)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            if stall_handshake:
                stop.wait(60)
                return
            conn.settimeout(5)
            tls = ctx.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = tls.recv(4096)
                if not piece:
                    return
                data += piece
            _trickle(tls, interval, stop)

    with _accepting(listener, stop, serve) as address:
        yield address


@contextmanager
def tls_static(directory: Path, certs: Path) -> Iterator[str]:
    """``directory`` over HTTPS with keep-alive (HTTP/1.1) on 127.0.0.1; yields host:port.
    Its certificate is ``certs/cert.pem``."""
    import ssl

    cert, key = self_signed(certs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    handler = type("Handler", (RepoHandler,), {"protocol_version": "HTTP/1.1"})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    httpd.daemon_threads = True
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield f"{host!s}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
