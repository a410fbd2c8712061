"""The generated dnsmasq configuration under a real dnsmasq, in a namespace of the test's own.

Two namespaces joined by a veth pair: dnsmasq runs the configuration
``distbuild netboot`` wrote (proxy-DHCP + TFTP) on one side, curl fetches the
boot files over TFTP from the other, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from distbuild.channel.serve import serving
from distbuild.record import Artifact, BuildRecord
from tests.conftest import run_cli
from tests.support.netns import netns

pytestmark = [pytest.mark.root]

SERVER, CLIENT = "10.77.0.1", "10.77.0.2"


def fake_build(tmp_path: Path) -> Path:
    """A build record with netboot artifacts of every kind (contents are arbitrary bytes)."""
    build = tmp_path / "out/node/1.0.0"
    files = {
        ("amd64", "netboot-uki", "amd64/netboot/pc/installer.efi", "pc"): os.urandom(300_001),
        ("amd64", "netboot-uki", "amd64/netboot/qemu/installer.efi", "qemu"): os.urandom(9000),
        ("arm64", "netboot-uki", "arm64/netboot/qemu/installer.efi", "qemu"): os.urandom(70_000),
        ("armv7", "netboot-kernel", "armv7/netboot/linux", None): os.urandom(50_000),
        ("armv7", "netboot-initrd", "armv7/netboot/initrd", None): os.urandom(40_000),
        ("armv7", "netboot-script", "armv7/netboot/qemu/boot.scr.uimg", "qemu"): b"script",
    }
    record = BuildRecord("node", "1.0.0", 0)
    for (arch, kind, rel, board), data in files.items():
        path = build / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        record.artifacts.append(Artifact(arch, kind, rel, sha, len(data), board))
    record.write(build)
    return build


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None or shutil.which("curl") is None:
        pytest.skip("needs root, dnsmasq (dnsmasq-base) and curl")
    with netns("db-nb-srv") as srv, netns("db-nb-cli") as cli:
        run = ["ip", "link", "add", "nbs", "netns", srv.name, "type", "veth", "peer"]
        subprocess.run([*run, "name", "nbc", "netns", cli.name], check=True)
        for ns, dev, addr in ((srv, "nbs", SERVER), (cli, "nbc", CLIENT)):
            subprocess.run(
                ["ip", "-n", ns.name, "addr", "add", f"{addr}/24", "dev", dev], check=True
            )
            subprocess.run(["ip", "-n", ns.name, "link", "set", dev, "up"], check=True)
        yield srv.name, cli.name


def test_dnsmasq_runs_the_config_and_serves_the_boot_files_over_tftp(
    tmp_path: Path, veth: tuple[str, str]
) -> None:
    srv, cli = veth
    site = tmp_path / "site"
    build = fake_build(tmp_path)
    args = ["netboot", build, "--dir", site, "--net", "10.77.0.0/24", "--board", "pc"]
    assert run_cli(*args, "--interface", "nbs", "--http-url", f"http://{SERVER}:8080/netboot") == 0
    conf = (site / "dnsmasq.conf").read_text()
    assert "dhcp-range=10.77.0.0,proxy,255.255.255.0" in conf
    assert "pxe-service=x86-64_EFI,distbuild-amd64,amd64/netboot/pc/installer.efi" in conf
    assert "pxe-service=ARM64_EFI,distbuild-arm64,arm64/netboot/qemu/installer.efi" in conf
    http = (site / "http-boot.txt").read_text()
    assert f"amd64 http://{SERVER}:8080/netboot/amd64/netboot/pc/installer.efi" in http
    assert not (site / "amd64/netboot/qemu").exists()  # only the chosen board

    log = tmp_path / "dnsmasq.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", srv, "dnsmasq", "--keep-in-foreground", "--log-facility=-",
             f"--conf-file={site / 'dnsmasq.conf'}", "--user=root", "--pid-file",
             f"--dhcp-leasefile={tmp_path / 'leases'}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while "TFTP root" not in log.read_text() and time.monotonic() < deadline:
            assert daemon.poll() is None, log.read_text()
            time.sleep(0.1)
        started = log.read_text()
        assert "proxy on subnet 10.77.0.0" in started, started
        for rel in ("amd64/netboot/pc/installer.efi", "boot.scr.uimg", "armv7/netboot/linux"):
            got = tmp_path / "got"
            subprocess.run(
                ["ip", "netns", "exec", cli, "curl", "-sf", "--max-time", "20",
                 f"tftp://{SERVER}/{rel}", "-o", got],
                check=True,
            )  # fmt: skip
            assert got.read_bytes() == (site / rel).read_bytes()
        assert (site / "boot.scr.uimg").read_bytes() == b"script"
        assert (site / "amd64/netboot/pc/installer.efi").read_bytes() == (
            build / "amd64/netboot/pc/installer.efi"
        ).read_bytes()
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_a_tampered_build_or_hostile_values_write_no_config(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    site = tmp_path / "site"
    for bad in (["--net", "10.0.0.0/24\nport=53"], ["--net", "x"]):
        assert run_cli("netboot", build, "--dir", site, *bad) != 0
    args = ["netboot", build, "--dir", site, "--net", "10.77.0.0/24"]
    assert run_cli(*args, "--http-url", "http://h/a b") != 0
    assert run_cli(*args, "--interface", "eth0\nport=53") != 0
    assert run_cli(*args, "--board", "nosuch") != 0
    assert not (site / "dnsmasq.conf").exists()
    (build / "arm64/netboot/qemu/installer.efi").write_bytes(b"evil")
    assert run_cli(*args) != 0
    assert not site.exists()  # every file is checked before the first is copied


def test_serve_netboot_serves_the_site_next_to_the_channel(tmp_path: Path) -> None:
    site, repo = tmp_path / "site", tmp_path / "repo"
    (repo / "stable/metadata").mkdir(parents=True)
    (repo / "stable/metadata/timestamp.json").write_text("{}")
    (tmp_path / "secret").write_text("no")
    assert run_cli("netboot", fake_build(tmp_path), "--dir", site, "--net", "10.77.0.0/24") == 0
    with serving(repo, netboot=site) as server:
        uki = f"{server.url}/netboot/amd64/netboot/pc/installer.efi"
        got = requests.get(uki, timeout=10)
        assert got.status_code == 200
        assert got.content == (site / "amd64/netboot/pc/installer.efi").read_bytes()
        assert (
            requests.get(uki, headers={"Range": "bytes=0-1"}, timeout=10).content == got.content[:2]
        )
        assert requests.get(f"{server.url}/stable/metadata/timestamp.json", timeout=10).text == "{}"
        for bad in (
            "/netboot/../secret",
            "/netboot/%2e%2e/secret",
            "/netboot/",
            "/amd64/netboot/pc/installer.efi",
        ):
            assert requests.get(server.url + bad, timeout=10).status_code == 404, bad
