"""First-boot provisioning: the YAML subset, the checks, and the apply into a temp root."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from distbuild.core.errors import DistbuildError
from distbuild.node import blockyaml
from distbuild.node.cli import main
from distbuild.node.config import NodePaths
from distbuild.node.provision import PROVISION_FILE, ProvisionError, parse
from distbuild.node.provision_apply import apply, provision, provision_status, read_record
from tests.support.ssh import dss_key, ecdsa_key, ed25519_key, rsa_key

KEY = ed25519_key()

USER_DATA = f"""#cloud-config
hostname: node-7
users:
  - default
  - name: root
    ssh_authorized_keys:
      - {KEY}
write_files:
- path: /etc/motd
  permissions: '0640'
  content: |
    welcome
      to node-7
- path: /var/lib/app/config.json
  encoding: b64
  content: {base64.b64encode(b'{"a": 1}').decode()}
ntp:
  servers: [192.0.2.123, time.example]
"""
META_DATA = b"instance-id: iid-node-7\nlocal-hostname: ignored-by-hostname\n"
NETWORK = b"""version: 2
ethernets:
  eth0:
    addresses: [192.0.2.10/24]
    routes:
      - to: default
        via: 192.0.2.1
    nameservers:
      addresses: [192.0.2.53]
"""


def nocloud() -> dict[str, bytes]:
    return {"user-data": USER_DATA.encode(), "meta-data": META_DATA, "network-config": NETWORK}


# --- the YAML subset ----------------------------------------------------------


def test_yaml_subset_reads_nesting_lists_and_literal_blocks() -> None:
    doc = blockyaml.load(USER_DATA.encode(), "user-data")
    assert isinstance(doc, dict)
    assert doc["hostname"] == "node-7"
    assert doc["users"][1]["ssh_authorized_keys"] == [KEY]
    assert doc["write_files"][0]["content"] == "welcome\n  to node-7\n"
    assert doc["ntp"] == {"servers": ["192.0.2.123", "time.example"]}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a:\n\tb: 1\n", "tab"),
        ("a: &x 1\nb: *x\n", "unsupported YAML syntax"),
        ("a: {b: 1}\n", "unsupported YAML syntax"),
        ("a: >\n  folded\n", "not supported"),
        ("a: 1\na: 2\n", "given twice"),
        ("a: 1\n---\nb: 2\n", "several YAML documents"),
        ("a: b: c\n", "must not contain ': '"),
        ("a: 1\n   b: 2\n", "unexpected indentation"),
        ("a: [unclosed\n", "must end with ']'"),
        ("a:\n  - - nested\n", "list inside a list item"),
        ("dhcp4: yes\n", "boolean to YAML 1.1"),
        ("a: [on]\n", "boolean to YAML 1.1"),
    ],
)
def test_yaml_subset_refuses_what_it_does_not_read(text: str, needle: str) -> None:
    with pytest.raises(blockyaml.YamlError, match=needle):
        blockyaml.load(text.encode(), "f")


def test_yaml_subset_is_bounded() -> None:
    deep = "".join(" " * (2 * i) + f"k{i}:\n" for i in range(40)) + " " * 80 + "v: 1\n"
    with pytest.raises(blockyaml.YamlError, match="nested deeper"):
        blockyaml.load(deep.encode(), "f")
    with pytest.raises(blockyaml.YamlError, match="nested"):
        blockyaml.load(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "f")
    with pytest.raises(blockyaml.YamlError, match="nested deeper"):
        blockyaml.load(b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}", "f")
    with pytest.raises(blockyaml.YamlError, match="more than"):
        blockyaml.load(b"a: " + b"x" * (blockyaml.MAX_BYTES + 1), "f")
    with pytest.raises(blockyaml.YamlError, match="more than 4096"):
        blockyaml.load(b"a:\n" + b"  - 1\n" * 5000, "f")


# --- the checks ------------------------------------------------------------------


def test_nocloud_files_parse_into_what_the_node_applies() -> None:
    p = parse(nocloud(), "boot")
    assert p.instance_id == "iid-node-7"
    assert p.hostname == "node-7"  # user-data's hostname wins over local-hostname
    assert p.keys == {"root": (KEY,)}
    assert [(f.path, f.mode) for f in p.files] == [
        ("/etc/motd", 0o640),
        ("/var/lib/app/config.json", 0o644),
    ]
    assert p.files[1].content == b'{"a": 1}'
    assert p.network is not None
    assert (p.network.interface, p.network.addresses, p.network.gateway) == (
        "eth0",
        ("192.0.2.10/24",),
        "192.0.2.1",
    )
    assert p.network.nameservers == ("192.0.2.53",)
    assert p.ntp_servers == ("192.0.2.123", "time.example")


@pytest.mark.parametrize("key", [rsa_key(), ecdsa_key(), ed25519_key("")])
def test_key_types_dropbear_uses_are_accepted(key: str) -> None:
    p = parse({PROVISION_FILE: f"ssh_authorized_keys: ['{key}']\n".encode()}, "boot")
    assert p.keys["root"] == (key.strip(),)


def bad(doc: str, needle: str) -> None:
    with pytest.raises(DistbuildError, match=needle):
        parse({PROVISION_FILE: doc.encode()}, "boot")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("runcmd: [reboot]\n", "runcmd is not supported"),
        ("bootcmd: [x]\n", "bootcmd is not supported"),
        ("hostnme: x\n", "unknown key 'hostnme'"),
        ("hostname: [a, b]\n", "must be a string, not a list"),
        ("hostname: -bad-\n", "not a valid host name"),
        ("users: root\n", "must be a list"),
        ("users:\n  - name: root\n    sudo: ALL\n", "unknown key 'sudo'"),
        (f"ssh_authorized_keys: ['{dss_key()}']\n", "ssh-dss' cannot be used"),
        ("ssh_authorized_keys: ['ssh-ed25519 !!!notbase64']\n", "not valid base64"),
        (f"ssh_authorized_keys: ['command=\"x\" {KEY}']\n", "cannot be used"),
        ("write_files:\n  - path: /etc/../root/x\n", "not allowed"),
        ("write_files:\n  - path: /etc/./x\n", "not allowed"),
        ("write_files:\n  - path: /usr/bin/x\n", "not allowed"),
        ("write_files:\n  - path: etc/x\n", "not allowed"),
        ("write_files:\n  - path: /etc//x\n", "not allowed"),
        ("write_files:\n  - path: /var/lib/distbuild/provision/applied.json\n", "provisioning"),
        ("write_files:\n  - path: /etc/x\n    permissions: 0644\n", "quoted octal"),
        ("write_files:\n  - path: /etc/x\n    owner: nobody\n", "owned by root"),
        ("write_files:\n  - path: /etc/x\n    append: true\n", "unknown key 'append'"),
        ("network: {}\n", "unsupported YAML"),
        ("network:\n  version: 1\n", "version 2"),
        (
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [10.0.0.1]\n",
            "prefix",
        ),
    ],
)
def test_hostile_or_wrong_input_is_refused_by_name(doc: str, needle: str) -> None:
    bad(doc, needle)


def test_user_data_must_be_cloud_config() -> None:
    with pytest.raises(ProvisionError, match="not #cloud-config"):
        parse({"user-data": b"#!/bin/sh\nreboot\n"}, "boot")


# --- apply into a temp root ---------------------------------------------------


def test_apply_writes_once_and_again_only_for_a_new_instance(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    first = apply(paths, nocloud(), "boot partition")
    assert first.applied
    assert "hostname=node-7 keys=1" in first.message
    assert (tmp_path / "etc/hostname").read_text() == "node-7\n"
    keys = tmp_path / "etc/distbuild/ssh/root/authorized_keys"
    assert keys.read_text() == KEY + "\n"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert keys.parent.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "etc/motd").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "var/lib/app/config.json").read_bytes() == b'{"a": 1}'
    assert (tmp_path / "etc/distbuild/network.static").read_text() == (
        "address eth0 192.0.2.10/24\ngateway eth0 192.0.2.1\n"
    )
    assert (tmp_path / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
    assert read_record(paths)["applied"]["instance_id"] == "iid-node-7"

    (tmp_path / "etc/hostname").write_text("changed-by-hand\n")
    again = apply(paths, nocloud(), "boot partition")
    assert not again.applied and "already applied" in again.message
    assert (tmp_path / "etc/hostname").read_text() == "changed-by-hand\n"

    files = nocloud()
    files["meta-data"] = b"instance-id: iid-node-7-b\n"
    assert apply(paths, files, "boot partition").applied
    assert (tmp_path / "etc/hostname").read_text() == "node-7\n"


def test_a_bad_input_keeps_the_previous_configuration(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    apply(paths, nocloud(), "boot partition")
    before = {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "provision" not in str(p)
    }
    files = nocloud()
    # Valid up to its last file: nothing of it may land.
    files["user-data"] = USER_DATA.replace("node-7", "node-8").encode() + b"runcmd: [reboot]\n"
    files["meta-data"] = b"instance-id: new\n"
    with pytest.raises(ProvisionError, match="runcmd"):
        apply(paths, files, "boot partition")
    after = {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "provision" not in str(p)
    }
    assert after == before
    status = provision_status(paths)
    assert status["applied"]["instance_id"] == "iid-node-7"
    assert "runcmd is not supported" in status["error"]["message"]


def test_a_symlink_on_the_way_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/app").symlink_to(outside)
    doc = b"write_files:\n  - path: /etc/app/x\n    content: owned\n"
    with pytest.raises(ProvisionError, match="not a directory"):
        apply(NodePaths(root), {PROVISION_FILE: doc}, "boot partition")
    assert list(outside.iterdir()) == []


def provisioned_node(tmp_path: Path) -> tuple[Path, Path]:
    """A node root provisioned (hostname n1, one key) from a boot directory: (root, boot)."""
    root, boot = tmp_path / "root", tmp_path / "boot"
    boot.mkdir()
    (root / "etc/distbuild").mkdir(parents=True)
    (root / "etc/distbuild/release").write_text("IMAGE=node\nVERSION=1.0.0\nARCH=amd64\n")
    (boot / PROVISION_FILE).write_text(f"hostname: n1\nssh_authorized_keys: ['{KEY}']\n")
    assert main(["--root", str(root), "provision", "--from", str(boot)]) == 0
    return root, boot


def test_cli_reports_on_the_console_and_in_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, boot = provisioned_node(tmp_path)
    assert "distbuild-os: provisioned hostname=n1 keys=1" in capsys.readouterr().out
    (boot / PROVISION_FILE).write_text("hostname: n2\nfavourite_colour: blue\n")
    assert main(["--root", str(root), "provision", "--from", str(boot)]) == 3
    out = capsys.readouterr().out
    assert (
        "distbuild-os: provision error: boot partition/distbuild-provision.yaml: unknown key" in out
    )
    main(["--root", str(root), "status", "--json"])
    status = json.loads(capsys.readouterr().out)["provision"]
    assert status["applied"]["hostname"] == "n1"
    assert "favourite_colour" in status["error"]["message"]
    main(["--root", str(root), "status"])
    text = capsys.readouterr().out
    assert "provision:  ERROR" in text and "hostname n1" in text
    assert (root / "etc/hostname").read_text() == "n1\n"


def test_baked_file_is_the_last_source(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    baked = tmp_path / "usr/lib/distbuild/provision.yaml"
    baked.parent.mkdir(parents=True)
    baked.write_text("hostname: from-image\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("console=ttyS0 distbuild.slot=a\n")
    empty = tmp_path / "boot"
    empty.mkdir()
    outcome = provision(paths, empty)
    assert outcome.applied and "hostname=from-image" in outcome.message
    assert read_record(paths)["applied"]["source"] == "image"


def test_kernel_command_line_seed_is_fetched_with_a_deadline(tmp_path: Path) -> None:
    """``ds=nocloud;s=http://…/`` from a real server on loopback (network-config optional)."""
    import functools
    import http.server
    import threading

    seed = tmp_path / "www/seed"
    seed.mkdir(parents=True)
    (seed / "user-data").write_text(USER_DATA)
    (seed / "meta-data").write_bytes(META_DATA)
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *_: None})
    handler = functools.partial(quiet, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "proc").mkdir()
        url = f"http://127.0.0.1:{server.server_address[1]}/seed/"
        (tmp_path / "proc/cmdline").write_text(f"console=ttyS0 ds=nocloud;s={url} quiet\n")
        empty = tmp_path / "boot"
        empty.mkdir()
        outcome = provision(NodePaths(tmp_path), empty)
        assert outcome.applied and "hostname=node-7 keys=1" in outcome.message
        assert read_record(NodePaths(tmp_path))["applied"]["source"] == url
        (seed / "meta-data").unlink()
        (tmp_path / "proc/cmdline").write_text(f"ds=nocloud;s={url}other/\n")
        with pytest.raises(ProvisionError, match="HTTP 404"):
            provision(NodePaths(tmp_path), empty)
        (tmp_path / "proc/cmdline").write_text("ds=nocloud;s=file:///etc/\n")
        with pytest.raises(ProvisionError, match="not an http"):
            provision(NodePaths(tmp_path), empty)
    finally:
        server.shutdown()


def test_the_readme_example_is_what_the_node_reads() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("# distbuild-provision.yaml: ")
    example = readme[start : readme.index("```", start)]
    example = re.sub(r"ssh-ed25519 AAAA[^\s\]]*( owner@laptop)?", KEY.rsplit(" ", 1)[0], example)
    p = parse({PROVISION_FILE: example.encode()}, "README")
    assert p.hostname == "rack1-node3" and p.instance_id == "rack1-node3"
    assert len(p.keys["root"]) == 2
    assert p.network is not None and p.network.gateway == "192.0.2.1"
    assert p.files[0].mode == 0o755 and p.ntp_servers == ("192.0.2.123",)


def test_a_directory_in_the_way_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "etc/motd").mkdir(parents=True)
    doc = b"write_files:\n  - path: /etc/motd\n    content: hi\n"
    with pytest.raises(ProvisionError, match="cannot write /etc/motd"):
        apply(NodePaths(tmp_path), {PROVISION_FILE: doc}, "boot partition")
    assert "applied" not in read_record(NodePaths(tmp_path))


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("hostname: n2\nfavourite_colour: blue\n", "unknown key 'favourite_colour'"),
        ("hostname: [n2\n", "must end with ']'"),  # unreadable YAML
        ("users:\n  - name: root\n\tssh_authorized_keys: []\n", "tab"),
        (f"ssh_authorized_keys: ['{dss_key()}']\n", "'ssh-dss' cannot be used"),
    ],
)
def test_each_bad_file_is_on_the_console_and_in_status_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: str, needle: str
) -> None:
    root, boot = provisioned_node(tmp_path)
    before = sorted(p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file())
    (boot / PROVISION_FILE).write_text(doc)
    capsys.readouterr()
    assert main(["--root", str(root), "provision", "--from", str(boot)]) == 3
    console = capsys.readouterr().out
    assert "distbuild-os: provision error: " in console and needle in console
    assert sorted(p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()) == before
    main(["--root", str(root), "status", "--json"])
    status = json.loads(capsys.readouterr().out)["provision"]
    assert needle in status["error"]["message"]
    assert status["applied"]["hostname"] == "n1"


def test_provision_reports_as_json(tmp_path: Path) -> None:
    """``distbuild-update provision --json``: what was applied, or the error and its hint."""
    import subprocess
    import sys

    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / PROVISION_FILE).write_text("instance-id: j-1\nlocal-hostname: json-node\n")
    root = tmp_path / "root"
    (root / "etc/distbuild").mkdir(parents=True)
    base = [sys.executable, "-m", "distbuild.node.cli", "--root", str(root), "provision"]
    done = subprocess.run([*base, "--from", str(seed), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["applied"] is True
    (seed / PROVISION_FILE).write_text("instance-id: j-2\nfavourite_colour: red\n")
    bad = subprocess.run([*base, "--from", str(seed), "--json"], capture_output=True, text=True)
    doc = json.loads(bad.stdout)
    assert bad.returncode == 3 and doc["applied"] is False and "favourite_colour" in doc["error"]
