#!/usr/bin/env python3
"""Update benchmark: distbuild-update's apply against curl | tee >(sha256sum) | dd.

On the host, against a slot-sized file and a loopback HTTP server (the
project's static channel server, in its own process so it does not share the
updater's interpreter). It measures

- throughput: the payload's bytes over the wall time of ``distbuild-update
  apply --no-reboot`` (TUF refresh, boot files, streaming with hashing and
  periodic syncs, the final sync and the read-back check included), as a ratio
  to ``curl URL | tee >(sha256sum) | dd of=SLOT conv=notrunc`` of the same
  payload from the same server (median of --runs each);
- peak RSS of the updater process while applying (ru_maxrss from wait4);
- bytes the server sent for the payload when the updater is killed (SIGKILL,
  a power cut) at 50% and run again (resume with Range), over the payload size.

The root image is built as a real build's is: random data blocks with the
dm-verity tree ``veritysetup format`` appends (the build's ``add_verity``) and
its parameters in boot.json, so the updater checks the tree first and every
4 KiB block before writing it. ``--no-verity`` publishes a boot.json without
them (an older channel): the whole-file hash only.

Targets (issue 5): ratio >= 0.9, peak RSS <= 40 MiB, bytes <= 1.05x.
Run: ``python benchmarks/update.py [--size-mib 512] [--runs 3] [--no-verity]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distbuild.channel.publish import publish  # noqa: E402
from tests.support.channel import channel, make_keys  # noqa: E402
from tests.support.node import Node  # noqa: E402

PAYLOAD = "node/v2/armv7/root.img"


def serve(directory: str, log: str) -> None:
    """The server process: distbuild's static server, logging each answered request."""
    from distbuild.channel.serve import make_server

    server = make_server(Path(directory))
    traffic = server.traffic
    real_end = traffic.end

    def end(transfer):  # type: ignore[no-untyped-def]
        real_end(transfer)
        if transfer is not None:
            with open(log, "a") as f:
                f.write(json.dumps([transfer.path, transfer.status, transfer.sent]) + "\n")

    traffic.end = end  # type: ignore[method-assign]
    print(server.url, flush=True)
    server.httpd.serve_forever()


def sent(log: Path, suffix: str = "root.img") -> int:
    if not log.exists():
        return 0
    return sum(s for p, _, s in map(json.loads, log.read_text().splitlines()) if p.endswith(suffix))


def make_build(out: Path, version: str, size: int, verity: bool = True) -> Path:
    """A build with a root output whose root image is ``size`` random bytes (and,
    with ``verity``, their dm-verity tree, as a real build appends it)."""
    import distbuild.build  # noqa: F401 - loads rootimg in the order the build does
    from distbuild.disk.rootimg import add_verity

    directory = out / "node" / version
    d = directory / "armv7" / "root"
    d.mkdir(parents=True)
    artifacts = []
    with (d / "root.img").open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            f.write(chunk)
            left -= len(chunk)
    boot: dict[str, object] = {"version": version, "cmdline": "console=ttyAMA0"}
    if verity:
        v = add_verity(d / "root.img")
        boot["verity"] = {
            "roothash": v.roothash,
            "salt": v.salt,
            "data_blocks": v.data_blocks,
            "hash_offset": v.hash_offset,
        }
    digest = hashlib.sha256()
    with (d / "root.img").open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    files = {
        "root.img": ("root", None),
        "linux": ("kernel", b"kernel\n" * 1024),
        "initrd": ("initrd", b"initrd\n" * 1024),
        "boot.json": ("boot", json.dumps(boot).encode()),
    }
    for name, (kind, data) in files.items():
        if data is not None:
            (d / name).write_bytes(data)
        sha = digest.hexdigest() if data is None else hashlib.sha256(data).hexdigest()
        artifacts.append(
            {
                "arch": "armv7",
                "kind": kind,
                "path": f"armv7/root/{name}",
                "sha256": sha,
                "size": (d / name).stat().st_size,
            }
        )
    record = {"image": "node", "version": version, "source_date_epoch": 0, "artifacts": artifacts}
    (directory / "build.json").write_text(json.dumps(record))
    return directory


def reset_node(node: Node, url: str, root_json: bytes, slot_size: int) -> None:
    import shutil

    if node.root.exists():
        shutil.rmtree(node.root)
    node.setup(url, root_json, "v1", slot_size=slot_size, reboot="never")


def updater_cmd(image: Path | None, node: Node) -> list[str]:
    """``distbuild-update -q --root NODE apply --no-reboot``: from the development
    environment, or (``image``) as the node image has it: a bare interpreter
    (-I -S: no site-packages) with only install_updater's files."""
    args = ["-q", "--root", str(node.root), "apply", "--no-reboot"]
    if image is None:
        return [sys.executable, "-m", "distbuild.node.cli", *args]
    from distbuild.rootfs.install_updater import PYTHON_DIR, VENDOR_DIR

    code = (
        f"import sys; sys.path[:0] = [{str(image / VENDOR_DIR)!r}, {str(image / PYTHON_DIR)!r}]; "
        "from distbuild.node.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-I", "-S", "-c", code, *args]


def apply(cmd: list[str]) -> tuple[float, float, subprocess.Popen[bytes]]:
    """Run apply; (seconds, peak RSS in MiB).

    The peak is the child's own VmHWM, sampled until it exits: ru_maxrss from
    wait4 would also count the benchmark process it was forked from (Linux
    carries the pre-exec high-water mark over into the child's rusage).
    """
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.002)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"apply failed with exit code {proc.returncode}")
    return elapsed, peak / 1024, proc


def baseline(url: str, slot: Path) -> float:
    script = (
        'curl -sf "$1" | tee >(sha256sum > "$2.sha") | dd of="$2" bs=1M conv=notrunc status=none'
    )
    start = time.monotonic()
    subprocess.run(["bash", "-c", script, "bash", url, str(slot)], check=True)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument(
        "--no-verity",
        action="store_true",
        help="publish boot.json without dm-verity parameters (an older channel)",
    )
    ap.add_argument(
        "--dev",
        action="store_true",
        help="run the updater from the development venv instead of as installed in an image",
    )
    args = ap.parse_args()
    size = args.size_mib << 20
    slot_size = size + (64 << 20)
    with tempfile.TemporaryDirectory(prefix="distbuild-bench-update-", dir=args.dir) as tmp:
        work = Path(tmp)
        keys = make_keys(work / "keys")
        repo = work / "repo"
        for version, n in (("v1", 1 << 20), ("v2", size)):
            build = make_build(work / "builds", version, n, verity=not args.no_verity)
            publish(repo, channel("stable"), build, keys)
        root_json = (repo / "stable/metadata/1.root.json").read_bytes()
        log = work / "traffic.log"
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(repo), str(log)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            node = Node(work / "node")
            reset_node(node, url, root_json, slot_size)
            image = None
            if not args.dev:
                from distbuild.rootfs.install_updater import install_updater

                image = work / "image"
                install_updater(image)
            cmd = updater_cmd(image, node)
            payload_file = next((repo / "stable/targets/node/v2/armv7").glob("*.root.img"))
            payload_url = f"{url}/stable/targets/node/v2/armv7/{payload_file.name}"
            length = payload_file.stat().st_size  # the data and, with verity, its tree

            base_times, ours, rss = [], [], []
            for _ in range(args.runs):
                base_times.append(baseline(payload_url, node.device("b")))
                reset_node(node, url, root_json, slot_size)
                seconds, peak, _ = apply(cmd)
                ours.append(seconds)
                rss.append(peak)
            mib = length / (1 << 20)
            t_base, t_ours = statistics.median(base_times), statistics.median(ours)

            # A power cut at 50%, then the resumed apply.
            reset_node(node, url, root_json, slot_size)
            log.unlink(missing_ok=True)
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
            progress = node.state_dir / "progress.json"
            offset = 0
            while proc.poll() is None and offset < size // 2:
                with contextlib.suppress(OSError, ValueError):
                    offset = json.loads(progress.read_text())["offset"]
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            apply(cmd)
            total = sent(log)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()

    ratio = t_base / t_ours
    how = "development venv" if args.dev else "as installed in the image (bare python -I -S)"
    checks = "whole-file hash only" if args.no_verity else "dm-verity tree + every block checked"
    print(f"updater run {how}; python {sys.version.split()[0]}; {checks}")
    print("| measure | distbuild-update | baseline | target |")
    print("|---|---|---|---|")
    print(
        f"| apply {mib:.0f} MiB (median of {args.runs}) | {t_ours:.2f} s "
        f"({mib / t_ours:.0f} MiB/s) | {t_base:.2f} s ({mib / t_base:.0f} MiB/s) | |"
    )
    print(f"| throughput ratio | {ratio:.2f} | 1.00 | >= 0.9 |")
    print(f"| peak RSS while applying | {max(rss):.1f} MiB | | <= 40 MiB |")
    print(
        f"| bytes fetched, killed at {offset / length:.0%} then resumed | {total / length:.3f}x "
        "| | <= 1.05x |"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        main()
