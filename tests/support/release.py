"""Releases made from a build for the e2e stories: some of its artifacts, maybe relabelled."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import read_record

Artifact = dict[str, Any]


def release_of(
    build: Path,
    out: Path,
    version: str,
    keep: Callable[[Artifact], bool],
    broken_init: bool = False,
) -> list[Artifact]:
    """The artifacts of ``build`` that ``keep`` picks, as release ``version`` in ``out``
    (hard links; its ``build.json`` lists them); the kept artifacts.

    Under another version the boot entry says that version; ``broken_init``:
    it starts /bin/false as init (a release that passes every check on the
    server and fails on the node).
    """
    record = read_record(build)
    kept = []
    for a in record["artifacts"]:
        if not keep(a):
            continue
        src, dest = build / a["path"], out / a["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if a["kind"] == "boot" and (broken_init or version != record["version"]):
            meta = json.loads(src.read_text())
            cmdline = meta["cmdline"].replace(
                f"distbuild.version={meta['version']}", f"distbuild.version={version}"
            )
            meta.update(version=version, cmdline=cmdline + " init=/bin/false" * broken_init)
            data = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
            dest.write_bytes(data)
            a = {**a, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        else:
            os.link(src, dest)
        kept.append(a)
    record.update(version=version, artifacts=kept)
    (out / "build.json").write_text(json.dumps(record, indent=2))
    return kept
