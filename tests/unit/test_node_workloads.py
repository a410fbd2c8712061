"""Workloads: provisioning's ``containers:`` (checked as hostile input) and the runner.

The runner is driven against a fake ``ctr`` on PATH (a shell script that
records each call and, for ``ctr run``, runs the container's args as a host
command), so its output, exit codes and restart policies are real
processes'. The e2e (tests/e2e/test_workloads.py) uses the guest's containerd.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from distbuild.core.errors import DistbuildError
from distbuild.node import workloads as wl
from distbuild.node.cli import main
from distbuild.node.config import NodePaths
from distbuild.node.containers import APPLIED, ContainerSpecError, Workloads, check, from_json
from distbuild.node.provision import PROVISION_FILE, parse
from distbuild.node.provision_apply import apply
from tests.conftest import assert_clean_error, distbuild_process

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"10.0.2.2:5000/toolbox@{DIGEST}"
GOOD = f"""hostname: n1
insecure_registries: [10.0.2.2:5000]
containers:
  - name: hello
    image: {IMAGE}
    args: [sh, -c, echo hi]
    restart: on-failure
  - name: web.1
    image: registry.example/team/web@{DIGEST}
    network: host
"""


def workloads_of(doc: str) -> Workloads:
    p = parse({PROVISION_FILE: doc.encode()}, "boot")
    assert p.workloads is not None
    return p.workloads


# --- the containers: parser ---------------------------------------------------------


def test_containers_parse_with_defaults_and_plain_http_only_where_listed() -> None:
    w = workloads_of(GOOD)
    hello, web = w.containers
    assert (hello.name, str(hello.image), hello.args) == ("hello", IMAGE, ("sh", "-c", "echo hi"))
    assert (hello.restart, hello.network, hello.plain_http) == ("on-failure", "none", True)
    assert (web.restart, web.network, web.plain_http) == ("always", "host", False)
    assert web.image.registry == "registry.example" and web.image.repository == "team/web"
    assert w.insecure_registries == ("10.0.2.2:5000",)
    assert from_json(w.to_json(), "applied") == w  # the applied form reads back the same


def c(entry: str, extra: str = "") -> str:
    return f"{extra}containers:\n  - name: x\n{entry}"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (c("    image: 10.0.2.2:5000/toolbox:1.0.0\n"), "named by a tag"),
        (c("    image: 10.0.2.2:5000/toolbox\n"), "named by a tag"),
        (c(f"    image: 10.0.2.2:5000/toolbox:1.0@{DIGEST}\n"), "named by a tag"),
        (c("    image: 10.0.2.2:5000/toolbox@sha256:abc\n"), "not a sha256 digest"),
        (c(f"    image: 10.0.2.2:5000/toolbox@{DIGEST.upper()}\n"), "not a sha256 digest"),
        (c(f"    image: 10.0.2.2:5000/toolbox@sha512:{'a' * 128}\n"), "not a sha256"),
        (c(f"    image: toolbox@{DIGEST}\n"), "does not name its registry"),
        (c(f"    image: library/toolbox@{DIGEST}\n"), "does not name its registry"),
        (c(f"    image: reg.example/Tool@{DIGEST}\n"), "not a repository name"),
        (c(f"    image: reg.example/../x@{DIGEST}\n"), "not a repository name"),
        (c(f"    image: reg.example:99999/x@{DIGEST}\n"), "not a registry host"),
        (c(f"    image: -reg.example/x@{DIGEST}\n"), "not a registry host"),
        (c("    image: [a]\n"), "not an image reference"),
        (c(f"    image: {IMAGE}\n    restart: sometimes\n"), "not one of always"),
        (c(f"    image: {IMAGE}\n    restart: 'no'\n"), "not one of always"),
        (c(f"    image: {IMAGE}\n    network: bridge\n"), "not one of none, host"),
        (c(f"    image: {IMAGE}\n    env: [A=1]\n"), "unknown key 'env'"),
        (c(f"    image: {IMAGE}\n    args: uname\n"), "must be a list"),
        (c(f"    image: {IMAGE}\n    args: [true]\n"), "is not a string"),
        (c("    args: [x]\n"), "name and image are required"),
        (c(f"    image: {IMAGE}\n", "insecure_registries: [http://10.0.2.2]\n"), "registry host"),
        (c(f"    image: {IMAGE}\n", "insecure_registries: 10.0.2.2\n"), "must be a list"),
        ("containers: hello\n", "must be a list"),
        ("containers:\n  - hello\n", "must be a mapping"),
        (
            f"containers:\n  - name: a\n    image: {IMAGE}\n  - name: a\n    image: {IMAGE}\n",
            "two containers are named 'a'",
        ),
    ],
)
def test_bad_containers_are_refused_by_name(doc: str, needle: str) -> None:
    with pytest.raises(DistbuildError, match=needle):
        parse({PROVISION_FILE: doc.encode()}, "boot")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("a+b", "not a containerd id"),
        ("a__b", "not a containerd id"),
        ("x" * 77, "not a containerd id"),
        ("..", "invalid container name"),
        ("a/b", "invalid container name"),
        ("a\nb", "invalid container name"),
        ("-a", "invalid container name"),
        ("\u0430pp", "invalid container name"),  # a Cyrillic look-alike
        (7, "invalid container name"),
    ],
)
def test_container_names_follow_the_name_grammar_and_containerd(name: object, needle: str) -> None:
    with pytest.raises(ContainerSpecError, match=needle):
        check([{"name": name, "image": IMAGE}], None, "f")


def test_the_readme_example_is_what_the_node_reads() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("# workloads: in distbuild-provision.yaml")
    w = workloads_of(readme[start : readme.index("```", start)])
    (hello,) = w.containers
    assert (hello.name, hello.args, hello.restart, hello.plain_http) == (
        "hello",
        ("uname", "-m"),
        "never",
        True,
    )


def test_hostile_sizes_are_bounded() -> None:
    many = [{"name": f"c{n}", "image": IMAGE} for n in range(33)]
    with pytest.raises(ContainerSpecError, match="at most 32"):
        check(many, None, "f")
    with pytest.raises(ContainerSpecError, match="at most 128"):
        check([{"name": "a", "image": IMAGE, "args": ["x"] * 129}], None, "f")
    with pytest.raises(ContainerSpecError, match="NUL"):
        check([{"name": "a", "image": IMAGE, "args": ["a\0b"]}], None, "f")
    with pytest.raises(ContainerSpecError, match="not an image reference"):
        check([{"name": "a", "image": "r.example/" + "a" * 600 + "@" + DIGEST}], None, "f")
    with pytest.raises(ContainerSpecError, match="not a workloads file"):
        from_json(b'{"containers": [], "run": "rm -rf /"}', "applied")


def test_build_host_refuses_a_tag_with_error_and_hint(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    source = tmp_path / "p.yaml"
    source.write_text(c("    image: 10.0.2.2:5000/toolbox:latest\n"))
    proc = distbuild_process("disk", "provision", disk, source)
    err = assert_clean_error(proc, "is named by a tag", "@sha256:")
    assert disk.read_bytes() == b"\0" * 4096, err  # nothing written


def test_apply_writes_the_list_and_a_new_instance_without_it_removes_it(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    outcome = apply(paths, {PROVISION_FILE: b"instance-id: one\n" + GOOD.encode()}, "boot")
    assert "containers=2" in outcome.message
    applied = paths.at(APPLIED)
    assert from_json(applied.read_bytes(), "x") == workloads_of(GOOD)
    apply(paths, {PROVISION_FILE: b"instance-id: two\nhostname: n1\n"}, "boot")
    assert not applied.exists()


# --- the runner, against a fake ctr -------------------------------------------------

FAKE_CTR = r"""#!/bin/sh
# A stand-in for containerd's ctr: records each call; 'run' runs the args on the host.
here=$(dirname "$0")
echo "$*" >> "$here/calls"
case "$1 $2" in
  "--connect-timeout 2s") [ -f "$here/down" ] && exit 1; exit 0 ;;
  "images ls") cat "$here/images" 2>/dev/null; exit 0 ;;
  "images pull")
    n=$(cat "$here/pull-fails" 2>/dev/null || echo 0)
    [ -f "$here/pull-hangs" ] && sleep 30
    if [ "$n" -gt 0 ]; then
      echo $((n - 1)) > "$here/pull-fails"
      echo "ctr: failed to resolve reference: connection refused" >&2
      exit 1
    fi
    echo "elapsed: 0.1 s total: 0.0 B"; exit 0 ;;
  "run --rm")
    shift 2
    while [ "${1#--}" != "$1" ]; do
      case "$1" in --platform) shift 2 ;; *) shift ;; esac
    done
    shift 2
    exec "$@" ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def ctr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake ctr's directory (its 'calls' file, behaviour files), first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text(FAKE_CTR)
    (bin_dir / "ctr").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def calls(ctr: Path, verb: str) -> list[str]:
    path = ctr / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.startswith(verb)]


def one(
    args: list[str], restart: str, image: str = IMAGE, insecure: tuple[str, ...] = ()
) -> Workloads:
    w = check(
        [{"name": "app", "image": image, "args": args, "restart": restart}], list(insecure), "t"
    )
    assert w is not None
    return w


def runner(tmp_path: Path, w: Workloads, stop: threading.Event | None = None) -> wl.Runner:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "console").touch()  # a device on the node: the runner does not create it
    console = wl.Console(tmp_path / "console", io.StringIO())
    fast = wl.Backoff(first=0.01, most=0.02, reset_after=60)
    return wl.Runner(
        NodePaths(tmp_path / "root"), w, "linux/arm/v7", console, stop or threading.Event(), fast
    )


def test_pull_for_the_platform_then_run_with_output_on_the_console(
    tmp_path: Path, ctr: Path
) -> None:
    w = one(
        ["sh", "-c", "echo hello; printf 'x\\033[2Jy\\n'; exit 0"],
        "never",
        insecure=("10.0.2.2:5000",),
    )
    r = runner(tmp_path, w)
    r.run(until_done=True)
    assert calls(ctr, "images pull") == [
        f"images pull --platform linux/arm/v7 --plain-http {IMAGE}"
    ]
    (ran,) = calls(ctr, "run")
    assert ran.startswith(f"run --rm --platform linux/arm/v7 {IMAGE} app sh -c")
    console = (tmp_path / "console").read_text().splitlines()
    assert "distbuild-os: container app: hello" in console
    assert "distbuild-os: container app: x?[2Jy" in console  # no escape reaches the console
    assert "distbuild-os: container app exited (0); restart=never: exited" in console
    state = json.loads((tmp_path / "root" / wl.STATE.lstrip("/")).read_text())
    assert state["containers"]["app"]["state"] == "exited"
    assert state["containers"]["app"]["exit_code"] == 0


def test_a_registry_not_listed_as_insecure_is_pulled_over_https(tmp_path: Path, ctr: Path) -> None:
    runner(tmp_path, one(["true"], "never")).run(until_done=True)
    assert calls(ctr, "images pull") == [f"images pull --platform linux/arm/v7 {IMAGE}"]


def test_on_failure_runs_again_until_it_succeeds(tmp_path: Path, ctr: Path) -> None:
    count = tmp_path / "count"
    script = f"echo x >> {count}; [ $(wc -l < {count}) -ge 3 ]"
    r = runner(tmp_path, one(["sh", "-c", script], "on-failure"))
    r.run(until_done=True)
    assert len(calls(ctr, "run")) == 3
    assert r.states["app"]["state"] == "exited" and r.states["app"]["restarts"] == 2
    console = (tmp_path / "console").read_text()
    assert console.count("distbuild-os: container app exited (1); restarting in") == 2


def test_never_leaves_a_failed_container(tmp_path: Path, ctr: Path) -> None:
    r = runner(tmp_path, one(["sh", "-c", "exit 3"], "never"))
    r.run(until_done=True)
    assert len(calls(ctr, "run")) == 1
    assert r.states["app"]["exit_code"] == 3


def test_always_runs_again_after_success_until_stopped(tmp_path: Path, ctr: Path) -> None:
    stop = threading.Event()
    r = runner(tmp_path, one(["true"], "always"), stop)
    thread = threading.Thread(target=r.run, args=(True,))
    thread.start()
    deadline = time.monotonic() + 20
    while len(calls(ctr, "run")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert len(calls(ctr, "run")) >= 3
    assert r.states["app"]["state"] == "stopped"


def test_a_failed_pull_is_retried_and_a_hung_one_cut_off(
    tmp_path: Path, ctr: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ctr / "pull-fails").write_text("2\n")
    r = runner(tmp_path, one(["true"], "never"))
    r.run(until_done=True)
    assert len(calls(ctr, "images pull")) == 3 and len(calls(ctr, "run")) == 1
    console = (tmp_path / "console").read_text()
    assert console.count("cannot pull") == 2 and "connection refused" in console

    monkeypatch.setattr(wl, "PULL_DEADLINE", 0.5)
    (ctr / "pull-hangs").write_text("")
    stop = threading.Event()
    hung = runner(tmp_path / "2", one(["true"], "never"), stop)
    thread = threading.Thread(target=hung.run, args=(True,))
    thread.start()
    deadline = time.monotonic() + 20
    while hung.states["app"].get("state") != "pull-failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert "timed out" in (tmp_path / "2/console").read_text()


def test_an_image_pulled_on_an_earlier_boot_runs_without_its_registry(
    tmp_path: Path, ctr: Path
) -> None:
    (ctr / "images").write_text(f"other.example/x@{DIGEST}\n{IMAGE}\n")
    (ctr / "pull-fails").write_text("100\n")  # the registry is gone
    r = runner(tmp_path, one(["echo", "still here"], "never"))
    r.run(until_done=True)
    assert calls(ctr, "images pull") == []  # a digest names the same bytes forever
    console = (tmp_path / "console").read_text()
    assert f"container app: {IMAGE} is here already" in console
    assert "distbuild-os: container app: still here" in console


def test_a_restarted_runner_does_not_run_a_finished_container_again(
    tmp_path: Path, ctr: Path
) -> None:
    w = one(["true"], "never")
    runner(tmp_path, w).run(until_done=True)
    again = runner(tmp_path, w)
    again.run(until_done=True)
    assert len(calls(ctr, "run")) == 1
    assert "finished earlier this boot" in (tmp_path / "console").read_text()
    changed = one(["echo", "new"], "never")  # a different spec runs
    runner(tmp_path, changed).run(until_done=True)
    assert len(calls(ctr, "run")) == 2


def test_no_containerd_is_an_error_after_its_deadline(tmp_path: Path, ctr: Path) -> None:
    (ctr / "down").write_text("")
    with pytest.raises(wl.WorkloadError, match="did not answer"):
        wl.wait_for_containerd(threading.Event(), deadline=0.5)


def test_cli_runs_the_provisioned_list_and_status_shows_it(
    tmp_path: Path, ctr: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, boot = tmp_path / "root", tmp_path / "boot"
    boot.mkdir()
    (root / "etc/distbuild").mkdir(parents=True)
    (root / "etc/distbuild/release").write_text("IMAGE=node\nVERSION=1.0.0\nARCH=arm64\n")
    doc = f"containers:\n  - name: hello\n    image: {IMAGE}\n    args: [echo, hi]\n    restart: never\n"
    (boot / PROVISION_FILE).write_text(doc)
    base = ["--root", str(root)]
    assert main([*base, "provision", "--from", str(boot)]) == 0
    main([*base, "status"])
    assert f"container:  hello not started {IMAGE}" in capsys.readouterr().out
    console = tmp_path / "console"
    console.touch()
    assert main([*base, "workloads", "--until-done", "--json", "--console", str(console)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["containers"]["hello"]["state"] == "exited"
    assert "distbuild-os: container hello: hi" in console.read_text()
    assert calls(ctr, "images pull") == [f"images pull --platform linux/arm64 {IMAGE}"]
    main([*base, "status", "--json"])
    status = json.loads(capsys.readouterr().out)["workloads"]["containers"]["hello"]
    assert (status["state"], status["exit_code"], status["image"]) == ("exited", 0, IMAGE)
    main([*base, "status"])
    assert f"container:  hello exited (exit 0) {IMAGE}" in capsys.readouterr().out
