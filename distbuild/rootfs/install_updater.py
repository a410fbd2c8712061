"""Put the node updater (``distbuild-update``) into a root tree.

One call from the image build, after the packages are unpacked::

    install_updater(root, channel_url=..., channel="stable", root_json=path)

It copies the updater's own modules and the pure core package (``distbuild.core``)
(DESIGN.md §6) into the image's Python path, vendors the pure-Python
libraries Debian does not ship in versions the updater works with into a
private directory (tuf and securesystemslib are not in bookworm at usable
versions, and tuf needs urllib3 2, where bookworm has 1.26; tenacity too, to
avoid python3-pbr), copied from this build host's installed distributions,
whose versions the test suite ran against. It writes the
``/usr/bin/distbuild-update`` launcher (which puts the private directory first
on ``sys.path``) and, when given, the config and the channel's trust anchor.
Target-arch binaries come from Debian packages in the image definition, not
from here: ``python3`` (the standard library) and, optionally,
``python3-cryptography`` (fast signature checks; securesystemslib falls back to
its pure-Python Ed25519 without it).

Nothing here runs target code, so every arch is built the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

import distbuild
from distbuild.core.errors import DistbuildError
from distbuild.rootfs.rootpath import RootDir

PYTHON_DIR = "usr/lib/python3/dist-packages"
"""On Debian's ``sys.path`` for every python3.x, so ``python3 -m distbuild.core.bootctl`` works too."""

VENDOR_DIR = "usr/lib/distbuild-update/vendor"
"""Private, so the vendored urllib3 2 does not collide with Debian's python3-urllib3."""

LAUNCHER = "usr/bin/distbuild-update"
CONFIG = "etc/distbuild/update.yaml"
TRUST_ANCHOR = "usr/share/distbuild/root.json"

NODE_PACKAGES = ("node", "core")
"""The rule (DESIGN.md §6): ``distbuild.node`` imports only itself and the pure
core (plus the standard library and :data:`VENDORED`); tests/unit/test_import_graph.py
holds the code to it. What the image carries follows from it: these packages'
modules and ``distbuild/__init__.py``."""

VENDORED = ("tuf", "securesystemslib", "tenacity", "urllib3")
"""Pure-Python distributions copied from the build host (top-level package = name)."""

_LAUNCHER_TEXT = """#!/usr/bin/python3
# distbuild-update: the on-node updater (installed by distbuild/rootfs/install_updater.py)
import sys

sys.path.insert(0, "/{vendor}")

from distbuild.node.cli import main

sys.exit(main())
"""


@dataclass(frozen=True)
class UpdaterSetup:
    """What ``distbuild image --channel-url …`` bakes into a node's root.

    ``settings`` are further ``update.yaml`` keys (reboot policy, poll
    interval, FleetLock URL, …), already checked by the node's own parser.
    """

    channel_url: str
    trust_root: Path
    channel: str = "stable"
    settings: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def parse(
        cls, channel_url: str, trust_root: Path, channel: str, settings: Sequence[str]
    ) -> UpdaterSetup:
        """Check the command line's values as the node would read them, at build time."""
        from distbuild.node.config import ConfigError, config_from, parse_document

        values: dict[str, object] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise DistbuildError(
                    f"--update-setting {item!r} is not KEY=VALUE",
                    hint="e.g. --update-setting reboot=fleetlock --update-setting poll_interval=1h",
                )
            raw, _ = parse_document(f"{key.strip()}: {value}", f"--update-setting {item}")
            values.update(raw)
        for fixed in ("channel_url", "channel"):
            if fixed in values:
                raise DistbuildError(
                    f"--update-setting {fixed}=… is not a setting",
                    hint=f"use --{fixed.replace('_', '-')}",
                )
        try:
            config_from(
                {"channel_url": channel_url, "channel": channel, **values}, {}, "--update-setting"
            )
        except ConfigError as e:
            raise DistbuildError(
                e.message, hint=e.hint or "the keys and values of update.yaml are in the README"
            ) from None
        if not trust_root.is_file():
            raise DistbuildError(
                f"trust root {trust_root} is not a file",
                hint="pass the channel's metadata/1.root.json (made by 'distbuild channel init')",
            )
        check_trust_anchor(trust_root.read_bytes())
        return cls(channel_url, trust_root, channel, values)


def check_trust_anchor(data: bytes) -> None:
    """Refuse anything but TUF root metadata as a node's trust anchor."""
    try:
        signed = json.loads(data)["signed"]
        if signed["_type"] != "root":
            raise ValueError(signed["_type"])
    except (ValueError, KeyError, TypeError):
        raise DistbuildError(
            "the trust anchor is not TUF root metadata",
            hint="pass the channel's metadata/1.root.json (or its current root.json)",
        ) from None


def node_files() -> list[Path]:
    """The distbuild source files the node needs, relative to the package's parent."""
    pkg = Path(distbuild.__file__).parent
    files = {Path(pkg.name, "__init__.py")}
    for name in NODE_PACKAGES:
        found = sorted(pkg.glob(f"{name}/**/*.py"))
        if not found:
            raise DistbuildError(f"the updater's package {name}/ is missing from {pkg}")
        files.update(p.relative_to(pkg.parent) for p in found)
    return sorted(files)


def vendored_files(name: str) -> list[tuple[Path, PurePosixPath]]:
    """(source, path under the Python dir) of an installed pure-Python distribution."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise DistbuildError(
            f"the node updater vendors {name}, which is not installed on this build host",
            hint=f"pip install {name} (it is a dependency of distbuild)",
        ) from None
    out: list[tuple[Path, PurePosixPath]] = []
    for f in dist.files or []:
        rel = PurePosixPath(str(f))
        if rel.parts[0] != name or "__pycache__" in rel.parts:
            continue
        if rel.suffix in (".so", ".pyd"):
            raise DistbuildError(f"{name} is not pure Python ({rel}); it cannot be vendored")
        out.append((Path(str(dist.locate_file(f))), rel))
    if not out:
        raise DistbuildError(f"installed {name} lists no files of package {name}/")
    return out


def install_updater(
    root: Path,
    *,
    channel_url: str | None = None,
    channel: str = "stable",
    root_json: Path | bytes | None = None,
    config: Mapping[str, object] | None = None,
    python_dir: str = PYTHON_DIR,
    vendor_dir: str = VENDOR_DIR,
) -> list[str]:
    """Install ``distbuild-update`` into the tree ``root``; returns the paths written.

    ``channel_url``/``channel``/``config`` make ``/etc/distbuild/update.yaml``
    (not written when none is given, so an image can ship its own in
    ``files:``); ``root_json`` is the channel's root metadata, the node's
    trust anchor.
    """
    written: list[str] = []
    # The tree is the image's: its links are followed inside it, never on the host.
    root.mkdir(parents=True, exist_ok=True)
    tree = RootDir(root)
    src_root = Path(distbuild.__file__).parent.parent
    for rel in node_files():
        _copy(tree, src_root / rel, f"{python_dir}/{rel.as_posix()}")
        written.append(str(PurePosixPath(python_dir) / rel.as_posix()))
    for name in VENDORED:
        for src, vrel in vendored_files(name):
            _copy(tree, src, f"{vendor_dir}/{vrel}")
            written.append(str(PurePosixPath(vendor_dir) / vrel))
    launcher = _LAUNCHER_TEXT.format(vendor=vendor_dir.strip("/"))
    tree.write_file(LAUNCHER, launcher.encode(), 0o755)
    written.append(LAUNCHER)
    if channel_url is not None or config:
        values: dict[str, object] = {"channel": channel}
        if channel_url is not None:
            values["channel_url"] = channel_url
        values.update(config or {})
        if "channel_url" not in values:
            raise DistbuildError("the updater config needs channel_url")
        # JSON-quoted values are valid in the updater's YAML subset.
        lines = [f"{k}: {json.dumps(v)}" for k, v in values.items()]
        header = "# distbuild-update configuration (see distbuild/node/config.py)\n"
        tree.write_file(CONFIG, (header + "\n".join(lines) + "\n").encode(), 0o644)
        written.append(CONFIG)
    if root_json is not None:
        data = root_json if isinstance(root_json, bytes) else root_json.read_bytes()
        check_trust_anchor(data)
        tree.write_file(TRUST_ANCHOR, data, 0o644)
        written.append(TRUST_ANCHOR)
    return written


def _copy(tree: RootDir, src: Path, rel: str) -> None:
    with src.open("rb") as f:
        tree.write_file(rel, f, 0o644)
