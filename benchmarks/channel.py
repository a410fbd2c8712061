#!/usr/bin/env python3
"""Channel benchmark: does publishing slow down with history, and what does an idle poll cost?

It measures
- publish into an empty channel (created beforehand, so creation is not
  counted), against publish into a channel that already holds N releases
  (default 1,000) of 3 arches each; both the median of several publishes of
  a small 3-arch build, with the release steps (channel page, registry) off.
  Two full channels: one that keeps everything (``keep: 0``) and one with
  retention on but ``keep`` above N (older releases go to ``.history``); in
  both the signed release index lists the newest 20 per image;
- the bytes an ngclient subscriber transfers when it polls and nothing
  changed (the server counts headers and bodies), and which files it asked for;
- for scale: the bytes of a poll right after a publish, and the sizes of the
  snapshot and release index at N releases.

Prints a markdown table. Run: `python benchmarks/channel.py [--releases 1000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distbuild.channel.keys import KeyStore  # noqa: E402
from distbuild.channel.model import Channel, Expiry  # noqa: E402
from distbuild.channel.pipeline import release_pipeline  # noqa: E402
from distbuild.channel.publish import publish  # noqa: E402
from distbuild.channel.repo import ChannelRepo, Update, init_channel  # noqa: E402
from distbuild.channel.serve import Server, serving  # noqa: E402
from distbuild.channel.tufapi import Updater  # noqa: E402
from distbuild.core.releases import INDEX_TARGET  # noqa: E402

ARCHES = ("armv7", "arm64", "amd64")
CHANNEL = Channel(
    name="bench",
    path=None,
    description="",
    keep=0,  # keep every release: the point is a long history
    registry_tag="bench",
    expiry=Expiry(
        root=timedelta(days=365),
        targets=timedelta(days=7),
        snapshot=timedelta(days=7),
        timestamp=timedelta(days=1),
    ),
    waves=(),
)


def make_build(out: Path, version: str) -> Path:
    """A build record with one lock file and one small payload per arch."""
    directory = out / "node" / version
    artifacts = []
    for arch in ARCHES:
        for kind, name, body in (
            ("lock", "packages.lock.json", f'{{"arch": "{arch}", "version": "{version}"}}\n'),
            ("root", "root.img", f"root image of {version} for {arch}\n" * 8),
        ):
            path = directory / arch / name
            path.parent.mkdir(parents=True, exist_ok=True)
            data = body.encode()
            path.write_bytes(data)
            artifacts.append(
                {
                    "arch": arch,
                    "kind": kind,
                    "path": f"{arch}/{name}",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
            )
    record = {"image": "node", "version": version, "source_date_epoch": 0, "artifacts": artifacts}
    (directory / "build.json").write_text(json.dumps(record))
    return directory


def timed_publish(repo: Path, channel: Channel, build: Path, keys: KeyStore) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one publish (CPU time ignores fsync waits)."""
    wall, cpu = time.perf_counter(), time.process_time()
    publish(repo, channel, build, keys, pipeline=release_pipeline(channel).targets_only())
    return time.perf_counter() - wall, time.process_time() - cpu


def poll(server: Server, root: bytes, cache: Path) -> None:
    meta, targets = server.channel_urls(CHANNEL.name)
    (cache / "metadata").mkdir(parents=True, exist_ok=True)
    updater = Updater(
        metadata_dir=str(cache / "metadata"),
        metadata_base_url=meta,
        target_dir=str(cache / "targets"),
        target_base_url=targets,
        bootstrap=root,
    )
    updater.refresh()
    info = updater.get_targetinfo(INDEX_TARGET)  # what a node asks next
    assert info is not None
    if updater.find_cached_target(info, str(cache / "releases.json")) is None:
        updater.download_target(info, str(cache / "releases.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", type=int, default=1000, help="history to build up")
    parser.add_argument("--samples", type=int, default=7, help="publishes timed per case")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="distbuild-bench-") as tmp:
        work = Path(tmp)
        keys = KeyStore.create(work / "keys", {}, {}, allow_root_keys=True)
        builds = work / "builds"

        kept = replace(CHANNEL, keep=args.releases * 2)
        cases = {"all": CHANNEL, "kept": kept}
        fills = {}
        for label, definition in cases.items():
            start = time.perf_counter()
            for i in range(args.releases):
                build = make_build(builds, f"1.{i}")
                publish(
                    work / f"full-{label}",
                    definition,
                    build,
                    keys,
                    pipeline=release_pipeline(definition).targets_only(),
                )
            fills[label] = time.perf_counter() - start

        # Interleaved, so that load from elsewhere on the machine hits each case alike.
        times: dict[str, list[tuple[float, float]]] = {"empty": [], "all": [], "kept": []}
        for i in range(args.samples):
            repo = work / f"empty-{i}"
            channel = ChannelRepo(repo, CHANNEL.name)
            with channel.lock():
                init_channel(channel, keys, CHANNEL.expiry)
            times["empty"].append(timed_publish(repo, CHANNEL, make_build(builds, f"0.{i}"), keys))
            for label, definition in cases.items():
                build = make_build(builds, f"2.{i}")
                times[label].append(timed_publish(work / f"full-{label}", definition, build, keys))

        repo = work / "full-all"
        channel = ChannelRepo(repo, CHANNEL.name)
        update = Update(channel, keys, CHANNEL.expiry)
        snapshot_size = (
            (channel.metadata / f"{update.snapshot.signed.version}.snapshot.json").stat().st_size
        )
        index = update.get(INDEX_TARGET)
        assert index is not None
        root = (channel.metadata / "root.json").read_bytes()

        with serving(repo) as server:
            cache = work / "subscriber"
            poll(server, root, cache)  # first contact: everything
            server.traffic.clear()
            poll(server, root, cache)  # nothing changed
            idle = server.traffic.requests
            build = make_build(builds, "3.0")
            publish(repo, CHANNEL, build, keys, pipeline=release_pipeline(CHANNEL).targets_only())
            server.traffic.clear()
            poll(server, root, cache)  # one release landed
            changed = server.traffic.requests

    def median(label: str, which: int) -> float:
        return statistics.median(t[which] for t in times[label]) * 1000

    idle_bytes = sum(t.sent for t in idle)
    asked = ", ".join(f"{t.path.rsplit('/', 1)[1]} ({t.status}, {t.sent} B)" for t in idle)
    n = f"{args.releases:,}"
    rows = [
        (
            "publish into an empty channel (median wall / CPU)",
            f"{median('empty', 0):.1f} ms / {median('empty', 1):.1f} ms",
            "",
        ),
    ]
    for label, what in (
        ("all", f"publish into a channel holding {n} releases x 3 arches, keep: 0"),
        ("kept", f"same, keep: {2 * args.releases:,} (retention on)"),
    ):
        rows.append((what, f"{median(label, 0):.1f} ms / {median(label, 1):.1f} ms", ""))
        rows.append(
            (
                "ratio to empty (wall / CPU)",
                f"{median(label, 0) / median('empty', 0):.2f}x / "
                f"{median(label, 1) / median('empty', 1):.2f}x",
                "<= 2x",
            )
        )
    rows += [
        ("idle poll: bytes transferred", f"{idle_bytes} B", "<= 2048 B"),
        ("idle poll: requests", asked, "timestamp + root N+1 probe"),
        ("poll after one publish: bytes (keep: 0)", f"{sum(t.sent for t in changed):,} B", ""),
        (f"snapshot.json at {n} releases", f"{snapshot_size:,} B", ""),
        (f"releases.json at {n} releases, keep: 0", f"{index.length:,} B", ""),
        (
            f"building each {n}-release history",
            f"{fills['all']:.0f} s, {fills['kept']:.0f} s",
            "",
        ),
    ]
    print("| measure | value | target |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
