"""``distbuild-update``: the on-node updater's command line.

argparse, not click: the node's Python carries only what the updater needs
(DESIGN.md §6), and click is a build-side dependency. Like the build CLI, only
this module prints ``error: …`` / ``hint: …`` and chooses exit codes; every
action is also logged to the state directory's ``update.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from distbuild import __version__
from distbuild.core.errors import DistbuildError
from distbuild.node import logfile
from distbuild.node.config import Config, ConfigError, NodePaths, load_config
from distbuild.node.provision_apply import provision_lines, provision_status, run_provision
from distbuild.node.updater import NodeUpdater, Outcome
from distbuild.node.workloads import run_workloads, workloads_lines, workloads_status

log = logging.getLogger("distbuild.node")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distbuild-update",
        description="Keep this node on its channel's newest release (A/B slots, TUF-verified).",
    )
    p.add_argument("--version", action="version", version=f"distbuild-update {__version__}")
    p.add_argument("--config", type=Path, help="config file (default: /etc/distbuild/update.yaml)")
    p.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("DISTBUILD_UPDATE_ROOT", "/")),
        help="resolve the node's paths under this directory (tests, image builds)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("check", help="refresh the channel and say what would be installed")
    c.add_argument("--allow-downgrade", action="store_true", help="consider older releases")

    a = sub.add_parser("apply", help="install the newest release into the other slot")
    a.add_argument("--allow-downgrade", action="store_true", help="consider older releases")
    a.add_argument("--no-reboot", action="store_true", help="install but do not reboot")

    s = sub.add_parser("status", help="slots, versions, last check and result, rollbacks")
    g = sub.add_parser("mark-good", help="run the health check and bless the booted slot")
    b = sub.add_parser("rollback", help="boot the other (good) slot next and reboot per policy")
    h = sub.add_parser(
        "health-failed",
        help="the health check failed: roll back a slot on trial, report one already good",
    )
    h.add_argument("reason", help="what failed (kept in status)")
    for reporting in (c, a, s, g, b, h):
        _json_flag(reporting)

    t = sub.add_parser(
        "time-sync", help="set the clock from time servers (SNTP), never below its floor"
    )
    t.add_argument("servers", nargs="+", metavar="SERVER")
    t.add_argument("--once", action="store_true", help="one sync, then exit")
    t.add_argument("--interval", type=float, default=1024.0, metavar="SECONDS")

    pv = sub.add_parser("provision", help="apply first-boot provisioning once (rcS runs it)")
    pv.add_argument("--from", dest="source_dir", type=Path, help="read it from this directory")
    _json_flag(pv)

    gd = sub.add_parser("grow-data", help="grow the data partition to the end of its disk (rcS)")
    _json_flag(gd)
    _add_workloads(sub)
    _add_install_disk(sub)

    r = sub.add_parser("run", help="the daemon: poll, apply, reboot per policy")
    r.add_argument("--once", action="store_true", help="one round, then exit")
    r.add_argument(
        "--config-retry",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with an unusable config, idle and read it again this often (default 60)",
    )
    return p


def _add_workloads(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser(
        "workloads", help="run provisioning's containers with containerd (rcS supervises it)"
    )
    w.add_argument("--console", type=Path, help="also write each line to this file or device")
    w.add_argument(
        "--until-done",
        action="store_true",
        help="exit once no container is left to run (by default it idles, so that "
        "a supervisor does not start them again)",
    )
    _json_flag(w)


def _add_install_disk(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    i = sub.add_parser(
        "install-disk",
        help="network installer: write this machine's disk from the channel named on the "
        "kernel command line (distbuild.channel_url=, …, install_disk=, install_wipe=1)",
    )
    i.add_argument("--no-network", action="store_true", help="the network is up already")
    i.add_argument(
        "--staging",
        type=Path,
        default=Path("/run/distbuild-install/disk.img"),  # netinstall.STAGING
        help="where the verified image is kept before it is written (RAM)",
    )


def _install_disk(args: argparse.Namespace) -> int:
    """``install-disk``: every step and refusal is a ``distbuild-install:`` console line."""
    from distbuild.node.netinstall import run_install

    return run_install(NodePaths(args.root), args.staging, network=not args.no_network)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    # The same --json as the build CLI's (distbuild.cli.options.json_option).
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _print_json(data: Any) -> None:
    """One JSON document, sorted keys, on stdout (as the build CLI prints it)."""
    print(json.dumps(data, indent=2, sort_keys=True))


def _print(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        _print_json(outcome.__dict__)
    else:
        print(outcome.message)


def _status_text(s: dict[str, Any]) -> str:
    """``distbuild-update status`` for people: one line per fact."""
    lines = _where(s) + _slot_lines(s) + provision_lines(s.get("provision") or {})
    lines += workloads_lines(s.get("workloads") or {}) + _history(s)
    return "\n".join(lines)


def _where(s: dict[str, Any]) -> list[str]:
    """The configuration, image, channel and the booted and other slots."""
    lines = [f"config:     ERROR: {s['config_error']}"] if s.get("config_error") else []
    board = f", board {s['board']}" if s["board"] else ""
    if s["channel_url"]:
        channel = f"{s['channel']} at {s['channel_url']}"
    elif s.get("config_error"):
        channel = "unknown (the configuration is unusable)"
    else:
        channel = "none (no /etc/distbuild/update.yaml)"
    return [
        *lines,
        f"image:      {s['image']} ({s['arch']}{board})",
        f"channel:    {channel}",
        f"booted:     slot {s['booted']['slot'] or '?'}, version {s['booted']['version']}",
        f"other:      slot {s['other']['slot'] or '?'}, version {s['other']['version'] or '-'}",
    ]


def _slot_lines(s: dict[str, Any]) -> list[str]:
    """Each slot's version and boot state, and the boot order."""
    lines: list[str] = []
    for name, st in sorted(s["slots"].items()):
        if not isinstance(st, dict):  # the boot partition could not be read
            lines.append(f"slots:      {st}")
            continue
        flags = "good" if st["good"] else f"{st['tries_left']} tries left"
        if not st["bootable"]:
            flags = "not bootable"
        lines.append(f"slot {name}:     {st['version'] or '-'} ({flags})")
    lines.append(f"boot order: {' '.join(s['boot_order']) or '-'}")
    return lines


def _history(s: dict[str, Any]) -> list[str]:
    """The last check and result, an update in flight, failures and rollbacks."""
    lines = [f"last check: {s['last_check'] or 'never'}"]
    if r := s["last_result"]:
        outcome = "ok" if r["ok"] else "FAILED"
        lines.append(f"last result: {outcome} {r['action']} at {r['at']}: {r['message']}")
    if p := s["pending"]:
        lines.append(f"pending:    {p['version']} in slot {p['slot']} (from {p['from_version']})")
    if d := s["download"]:
        lines.append(f"download:   {d['target']} {d['offset']}/{d['length']} bytes")
    lines += [f"failed:     {f['action']} at {f['at']}: {f['message']}" for f in s["failures"]]
    lines += [
        f"rolled back: {rb['version']} (slot {rb['slot']}, {rb['at']}): {rb['reason']}"
        for rb in s["rolled_back"]
    ]
    return lines


# Commands that work on the slots alone: a node built without a channel still
# boots, is health-checked and blessed, and can say where it stands.
_LOCAL = ("status", "mark-good", "rollback", "health-failed", "time-sync")


def _load(args: argparse.Namespace) -> tuple[Config, NodePaths]:
    paths = NodePaths(args.root)
    path = args.config or paths.config
    if args.command in _LOCAL and args.config is None and not path.exists():
        return Config(channel_url=""), paths
    return load_config(path), paths


def _run(args: argparse.Namespace) -> int:
    """The daemon; a bad config makes it idle, not exit (see distbuild.node.daemon)."""
    from distbuild.node.daemon import run_loop

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def make() -> NodeUpdater:
        cfg, pth = _load(args)
        return NodeUpdater(cfg, pth)

    retry = max(0.1, args.config_retry)
    return run_loop(make, once=args.once, stop=stop, config_retry=retry)


def _time_sync(args: argparse.Namespace) -> int:
    """SNTP against ``args.servers``, never below the clock floor."""
    from distbuild.node import clock, timesync
    from distbuild.node.config import read_release

    config, paths = _load(args)
    epoch = read_release(paths.release).epoch
    state_dir = paths.at(config.state_dir)

    def floor() -> int:
        return clock.floor(epoch, state_dir).seconds

    if args.once:
        print(timesync.sync_once(args.servers, floor()))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    timesync.run(args.servers, floor, max(16.0, args.interval), stop)
    return 0


def _status(args: argparse.Namespace) -> int:
    """Where the node stands; with an unusable config, that too (exit 3)."""
    paths = NodePaths(args.root)
    error: ConfigError | None = None
    try:
        config, paths = _load(args)
    except ConfigError as e:
        error, config = e, Config(channel_url="")
    status = NodeUpdater(config, paths).status()
    status["provision"] = provision_status(paths)
    status["workloads"] = workloads_status(paths)
    if error is not None:
        status["config_error"] = error.message + (f" (hint: {error.hint})" if error.hint else "")
    if args.json:
        _print_json(status)
    else:
        print(_status_text(status))
    if error is None:
        return 0
    _report(error)
    return error.exit_code


def _grow_data(args: argparse.Namespace) -> int:
    """Grow ``data``; the console lines go to stdout as they happen (rcS's console)."""
    from distbuild.node.growdata import grow_data

    def say(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    result = grow_data(NodePaths(args.root), say)
    if args.json:
        _print_json(result)
    return 0


def _report(e: DistbuildError) -> None:
    print(f"error: {e.message}", file=sys.stderr)
    if e.hint:
        print(f"hint: {e.hint}", file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    logfile.to_stderr(args.quiet)
    if args.command == "run":
        return _run(args)
    if args.command == "status":
        return _status(args)
    if args.command == "time-sync":
        return _time_sync(args)
    if args.command == "provision":
        return run_provision(NodePaths(args.root), args.source_dir, args.json)
    if args.command == "grow-data":
        return _grow_data(args)
    if args.command == "install-disk":
        return _install_disk(args)
    if args.command == "workloads":
        return run_workloads(NodePaths(args.root), args.console, args.until_done, args.json)
    config, paths = _load(args)
    updater = NodeUpdater(config, paths)
    if args.command == "check":
        outcome, _ = updater.check(args.allow_downgrade)
        _print(outcome, args.json)
        return 0 if outcome.ok else 1
    if args.command == "apply":
        outcome = updater.apply(args.allow_downgrade, reboot=not args.no_reboot)
        _print(outcome, args.json)
        return 0 if outcome.ok else 1
    if args.command == "mark-good":
        _print(updater.mark_good(), args.json)
        return 0
    if args.command == "rollback":
        _print(updater.rollback(), args.json)
        return 0
    if args.command == "health-failed":
        outcome = updater.health_failed(args.reason)
        _print(outcome, args.json)
        return 0 if outcome.ok else 1
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``distbuild-update``."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except DistbuildError as e:
        _report(e)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
