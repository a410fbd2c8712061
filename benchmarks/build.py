#!/usr/bin/env python3
"""Build benchmark: distbuild against plain mmdebstrap, side by side, per arch.

For each arch it measures
- cold: `distbuild image` with an empty cache (resolve, download, unpack,
  customise, compress), against the baseline: `mmdebstrap --variant=extract`
  of the same package set to a tar, then the same gzip compression;
- warm: the same build again with nothing changed, as a share of cold, and
  whether it touched the network;
- sizes: the compressed layer and the unpacked tree.

Prints a markdown table. Run as root: `python benchmarks/build.py [--image node]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from distbuild.build import build  # noqa: E402
from distbuild.context import BuildOptions  # noqa: E402
from distbuild.core.arch import ARCHES, parse_arches  # noqa: E402
from distbuild.model.recipe import load_recipe  # noqa: E402
from distbuild.rootfs.fetch import NetworkCounter  # noqa: E402
from distbuild.rootfs.lock import read_lock  # noqa: E402
from distbuild.rootfs.sources import sources_for  # noqa: E402

EPOCH = 1764201600


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def gzip_file(src: Path, dest: Path, level: int = 6) -> None:
    """The same compression distbuild uses (zlib deflate, level 6), single-stream."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    with src.open("rb") as i, dest.open("wb") as o:
        while chunk := i.read(1 << 20):
            o.write(comp.compress(chunk))
        o.write(comp.flush())


def baseline(arch: str, packages: list[str], work: Path) -> float:
    recipe = load_recipe(REPO, ARCHES[arch])
    src = sources_for(recipe.suite, recipe.components, None)
    mirror = src[0].uri
    tar = work / f"base-{arch}.tar"

    def run() -> None:
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=extract",
                f"--architectures={recipe.debian_arch}",
                f"--include={','.join(packages)}",
                "--skip=check/signed-by",
                recipe.suite,
                str(tar),
                mirror,
            ],
            check=True,
            capture_output=True,
        )
        gzip_file(tar, work / f"base-{arch}.tar.gz")

    return timed(run)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--image", default="node")
    ap.add_argument("--arch", default="all")
    args = ap.parse_args()
    rows = []
    for arch in parse_arches((args.arch,)):
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            work = Path(tmp)
            project = work / "project"
            for sub in ("recipes", "images"):
                shutil.copytree(
                    REPO / sub, project / sub, ignore=shutil.ignore_patterns("*.lock.json")
                )
            opts = BuildOptions(
                project=project,
                image=args.image,
                arches=(arch,),
                out=work / "out",
                cache=work / "cache",
                version="1.0.0",
                source_date_epoch=EPOCH,
            )
            NetworkCounter.requests = 0
            cold = timed(lambda o=opts: build(o))  # type: ignore[misc]
            lock = read_lock(project / "images" / f"{args.image}.{arch.name}.lock.json")
            NetworkCounter.requests = 0
            warm = timed(lambda o=opts: build(o))  # type: ignore[misc]
            warm_net = NetworkCounter.requests
            base = baseline(arch.name, list(lock.requested), work)
            record = json.loads((work / "out" / args.image / "1.0.0" / "build.json").read_text())
            layer = max(
                (work / "out" / args.image / "1.0.0" / "oci/blobs/sha256").iterdir(),
                key=lambda p: p.stat().st_size,
            )
            base_gz = (work / f"base-{arch.name}.tar.gz").stat().st_size
            rows.append(
                (
                    arch.name,
                    len(lock.packages),
                    cold,
                    base,
                    warm,
                    warm_net,
                    layer.stat().st_size,
                    base_gz,
                    record["oci"]["index"][:19],
                )
            )
    print(f"### `distbuild image --image {args.image}`, cold and warm, against mmdebstrap + gzip\n")
    print(
        "| arch | packages | cold | baseline | cold / baseline | warm | warm / cold | warm network requests | layer (gzip) | baseline tar.gz |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, cold, base, warm, net, size, bsize, _ in rows:
        print(
            f"| {name} | {n} | {cold:.1f} s | {base:.1f} s | {cold / base:.2f}x | {warm:.2f} s | "
            f"{100 * warm / cold:.1f}% | {net} | {size / 1048576:.1f} MiB | {bsize / 1048576:.1f} MiB |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
