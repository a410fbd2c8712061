"""The node's configuration (``/etc/distbuild/update.yaml``) and its system paths.

The node has no YAML library (DESIGN.md §6 keeps its dependencies to the
standard library, tenacity, tuf and cryptography), so the file is a small,
documented subset of YAML that any YAML parser reads the same way:

* one ``key: value`` per line at the top level, ``#`` comments, blank lines;
* values: plain scalars, ``'single'`` or ``"double"`` quoted strings, integers,
  ``true``/``false``, ``null`` or empty, and flow lists ``[a, "b c"]``;
* or the whole file as one JSON object (JSON is YAML too).

Nested blocks, anchors and multi-line strings are refused with the file and
line, never guessed at. Unknown keys are errors, so a typo does not silently
fall back to a default on a machine nobody watches.

Every absolute path the updater touches is resolved under :class:`NodePaths`'
``root`` (``/`` on a node), so tests and image builds run it against a tree.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import names
from distbuild.core.arch import ARCHES
from distbuild.core.errors import DistbuildError

CONFIG_PATH = "/etc/distbuild/update.yaml"
TRUST_ANCHOR = "/usr/share/distbuild/root.json"
RELEASE_PATH = "/etc/distbuild/release"
STATE_DIR = "/var/lib/distbuild-update"
KURED_SENTINEL = "/var/run/reboot-required"
BOOT_MOUNT = "/run/distbuild/boot"

REBOOT_POLICIES = ("immediate", "kured", "fleetlock", "never")


class ConfigError(DistbuildError):
    """The node's configuration file is invalid."""

    exit_code = 3


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps things; every path lives under ``root``."""

    root: Path = Path("/")

    def at(self, path: str) -> Path:
        """``path`` (absolute on the node) under :attr:`root`."""
        return self.root / path.lstrip("/")

    @property
    def config(self) -> Path:
        return self.at(CONFIG_PATH)

    @property
    def trust_anchor(self) -> Path:
        return self.at(TRUST_ANCHOR)

    @property
    def release(self) -> Path:
        return self.at(RELEASE_PATH)

    @property
    def cmdline(self) -> Path:
        return self.at("/proc/cmdline")

    @property
    def machine_id(self) -> Path:
        return self.at("/etc/machine-id")

    @property
    def hostname(self) -> Path:
        return self.at("/etc/hostname")

    @property
    def sys_block(self) -> Path:
        return self.at("/sys/class/block")

    @property
    def mounts(self) -> Path:
        return self.at("/proc/self/mounts")


@dataclass(frozen=True)
class Config:
    """What ``update.yaml`` says, parsed and checked once."""

    channel_url: str
    channel: str = "stable"
    image: str | None = None  # default: IMAGE of /etc/distbuild/release
    board: str | None = None  # default: BOARD of /etc/distbuild/release, if any
    reboot: str = "immediate"
    reboot_command: tuple[str, ...] = ("reboot",)
    fleetlock_url: str | None = None
    fleetlock_group: str = "default"
    health_check: tuple[str, ...] = ()
    poll_interval: float = 3600.0
    poll_jitter: float = 300.0
    tries: int = 3
    allow_downgrade: bool = False
    boot_chain: str | None = None  # default: the arch's chain (distbuild.core.arch)
    boot_dir: str | None = None  # default: mount the esp/boot partition at BOOT_MOUNT
    slot_a: str | None = None  # default: the partition labelled root-a
    slot_b: str | None = None
    state_dir: str = STATE_DIR
    kured_sentinel: str = KURED_SENTINEL
    node_id: str | None = None  # default: /etc/machine-id, else the hostname
    seed: int | None = None  # default: derived from node_id
    read_timeout: float = 30.0
    min_rate: int = 16 * 1024  # bytes/s averaged over rate_window
    rate_window: float = 60.0
    request_deadline: float = 120.0  # headers within this; a body also gets length/min_rate
    retries: int = 5
    retry_wait: float = 2.0  # first back-off; doubles up to retry_wait_max
    retry_wait_max: float = 60.0

    def slot_device(self, slot: str) -> str | None:
        return self.slot_a if slot == "a" else self.slot_b


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """``90``, ``30s``, ``15m``, ``1h30m``, ``1d`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"invalid duration {value!r} (write e.g. 30s, 15m, 1h, 1d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _str(v: object) -> str:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ValueError("must be a string")
    return str(v)


def _opt_str(v: object) -> str | None:
    return None if v is None or v == "" else _str(v)


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be an integer")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _argv(v: object) -> tuple[str, ...]:
    if v is None or v == "":
        return ()
    if isinstance(v, list):
        return tuple(_str(x) for x in v)
    return tuple(shlex.split(_str(v)))


def _policy(v: object) -> str:
    text = _str(v)
    if text not in REBOOT_POLICIES:
        raise ValueError(f"must be one of {', '.join(REBOOT_POLICIES)}")
    return text


def _chain(v: object) -> str | None:
    text = _opt_str(v)
    chains = sorted({a.boot_chain for a in ARCHES.values()})
    if text is not None and text not in chains:
        raise ValueError(f"must be one of {', '.join(chains)}")
    return text


def _tries(v: object) -> int:
    n = _int(v)
    if not 1 <= n <= 9:
        raise ValueError("must be between 1 and 9")
    return n


def _positive(parse: Callable[[object], float]) -> Callable[[object], float]:
    def check(v: object) -> float:
        n = parse(v)
        if n <= 0:
            raise ValueError("must be more than zero")
        return n

    return check


def _nonneg_duration(v: object) -> float:
    n = parse_duration(v)
    if n < 0:
        raise ValueError("must not be negative")
    return n


def _name(what: str, *, optional: bool = False) -> Callable[[object], str | None]:
    """A parser for a name (channel, image, board): the one grammar of distbuild.core.names."""

    def check(v: object) -> str | None:
        if optional and (v is None or v == ""):
            return None
        text = _str(v)
        reason = names.problem(text)
        if reason is not None:
            raise ValueError(f"not a valid {what} ({reason}); use {names.GRAMMAR}")
        return text

    return check


def _seed(v: object) -> int | None:
    if v is None:
        return None
    n = _int(v)
    if not 0 <= n < 2048:
        raise ValueError("must be between 0 and 2047")
    return n


# key -> parser (raises ValueError with what is wrong)
_KEYS: dict[str, Callable[[object], Any]] = {
    "channel_url": _str,
    "channel": _name(names.CHANNEL),
    "image": _name(names.IMAGE, optional=True),
    "board": _name(names.BOARD, optional=True),
    "reboot": _policy,
    "reboot_command": _argv,
    "fleetlock_url": _opt_str,
    "fleetlock_group": _str,
    "health_check": _argv,
    "poll_interval": _positive(parse_duration),
    "poll_jitter": _nonneg_duration,
    "tries": _tries,
    "allow_downgrade": _bool,
    "boot_chain": _chain,
    "boot_dir": _opt_str,
    "slot_a": _opt_str,
    "slot_b": _opt_str,
    "state_dir": _str,
    "kured_sentinel": _str,
    "node_id": _opt_str,
    "seed": _seed,
    "read_timeout": _positive(parse_duration),
    "min_rate": _int,
    "rate_window": _positive(parse_duration),
    "request_deadline": _positive(parse_duration),
    "retries": _int,
    "retry_wait": _nonneg_duration,
    "retry_wait_max": _nonneg_duration,
}


def load_config(path: Path) -> Config:
    """Read and check ``update.yaml``; every mistake names the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no updater configuration at {path}",
            hint="create it with at least 'channel_url: https://…' (see distbuild-update --help)",
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    raw, lines = parse_document(text, str(path))
    return config_from(raw, lines, str(path))


def config_from(raw: Mapping[str, object], lines: Mapping[str, int], where: str) -> Config:
    """Check a parsed mapping against the known keys and build the :class:`Config`."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        loc = f"{where}:{lines[key]}" if key in lines else where
        if key not in _KEYS:
            raise ConfigError(
                f"{loc}: unknown key {key!r}",
                hint=f"known keys: {', '.join(sorted(_KEYS))}",
            )
        try:
            values[key] = _KEYS[key](value)
        except ValueError as e:
            raise ConfigError(f"{loc}: {key}: {e}") from None
    if not values.get("channel_url"):
        raise ConfigError(
            f"{where}: channel_url is required",
            hint="set it to the base URL the channels are served from, e.g. https://updates.example/",
        )
    if values.get("reboot") == "fleetlock" and not values.get("fleetlock_url"):
        raise ConfigError(
            f"{where}: reboot: fleetlock needs fleetlock_url",
            hint="set fleetlock_url to the FleetLock server (e.g. airlock's URL)",
        )
    return Config(**values)


# --- the YAML subset ------------------------------------------------------------


def parse_document(text: str, where: str) -> tuple[dict[str, object], dict[str, int]]:
    """Parse the config subset (or a JSON object) into a mapping and key → line."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: the configuration must be a mapping")
        return data, {}
    out: dict[str, object] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        body = _strip_comment(line).rstrip()
        if not body.strip() or body.strip() == "---":
            continue
        if body[0].isspace():
            raise ConfigError(
                f"{where}:{number}: nested blocks are not supported",
                hint="write one 'key: value' per line at the top level (lists as [a, b])",
            )
        key, sep, value = body.partition(":")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{where}:{number}: expected 'key: value', got {line.strip()!r}")
        if key in out:
            raise ConfigError(f"{where}:{number}: {key} is given twice")
        try:
            out[key] = parse_scalar(value.strip())
        except ValueError as e:
            raise ConfigError(f"{where}:{number}: {key}: {e}") from None
        lines[key] = number
    return out, lines


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment that is outside quotes and starts a word."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_scalar(text: str) -> object:
    """One value of the subset: quoted string, number, bool, null, flow list or plain."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError("a flow list must end with ']' on the same line")
        inner = text[1:-1].strip()
        return [parse_scalar(item) for item in _split_items(inner)] if inner else []
    if text[0] in "'\"":
        return _quoted(text)
    if text[0] in "{&*!|>@`%":
        raise ValueError(f"unsupported YAML syntax {text[0]!r}")
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
        return float(text)
    return text


def _quoted(text: str) -> str:
    q = text[0]
    if len(text) < 2 or text[-1] != q:
        raise ValueError("unterminated quoted string")
    body = text[1:-1]
    if q == "'":
        if re.search(r"(?<!')'(?!')", body.replace("''", "")):
            raise ValueError("a quote inside a single-quoted string must be doubled")
        return body.replace("''", "'")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("invalid double-quoted string") from None
    if not isinstance(value, str):
        raise ValueError("invalid double-quoted string")
    return value


def _split_items(inner: str) -> list[str]:
    items: list[str] = []
    quote = ""
    start = 0
    for i, ch in enumerate(inner):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[]{}":
            raise ValueError("nested flow collections are not supported")
        elif ch == ",":
            items.append(inner[start:i].strip())
            start = i + 1
    if quote:
        raise ValueError("unterminated quoted string in a list")
    items.append(inner[start:].strip())
    if any(not item for item in items):
        raise ValueError("empty item in a list")
    return items


# --- /etc/distbuild/release -------------------------------------------------------


@dataclass(frozen=True)
class ReleaseInfo:
    """What the running root says it is: ``/etc/distbuild/release``."""

    image: str
    version: str
    arch: str
    board: str | None = None
    epoch: int | None = None  # SOURCE_DATE_EPOCH: the clock floor (distbuild.node.clock)


def read_release(path: Path) -> ReleaseInfo:
    """Parse the ``KEY=value`` lines the build writes into every rootfs."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DistbuildError(
            f"{path} is missing: this does not look like a distbuild node",
            hint="run distbuild-update on a node built by distbuild (or pass --root)",
        ) from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    missing = [k for k in ("IMAGE", "VERSION", "ARCH") if not values.get(k)]
    if missing:
        raise DistbuildError(f"{path} lacks {', '.join(missing)}")
    if values["ARCH"] not in ARCHES:
        raise DistbuildError(f"{path}: unknown ARCH {values['ARCH']!r}")
    epoch = values.get("EPOCH", "")
    return ReleaseInfo(
        values["IMAGE"],
        values["VERSION"],
        values["ARCH"],
        values.get("BOARD"),
        int(epoch) if epoch.isascii() and epoch.isdigit() and len(epoch) <= 12 else None,
    )
