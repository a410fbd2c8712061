"""``python3 -m distbuild.core.bootctl``: read and change A/B boot state.

Runs on the node (the health check marks the booted slot good with it) and on
a build host against a disk image. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distbuild.core.bootctl.base import (
    SLOTS,
    BootControl,
    BootFiles,
    DirFiles,
    ImageFiles,
    open_bootctl,
)
from distbuild.core.errors import DistbuildError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m distbuild.core.bootctl", description=__doc__)
    p.add_argument("--chain", required=True, help="boot chain: systemd-boot or u-boot")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", type=Path, help="a mounted boot partition")
    where.add_argument("--image", type=Path, help="a FAT image (edited with mtools)")
    p.add_argument("--offset", type=int, default=0, help="with --image: partition byte offset")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="print both slots' states as JSON")
    good = sub.add_parser("mark-good", help="bless a slot (default: the booted one)")
    good.add_argument("slot", nargs="?", choices=SLOTS)
    nxt = sub.add_parser("set-next", help="boot a slot next, on trial")
    nxt.add_argument("slot", choices=SLOTS)
    nxt.add_argument("--tries", type=int, default=3)
    off = sub.add_parser("mark-unbootable", help="never boot a slot (before rewriting it)")
    off.add_argument("slot", choices=SLOTS)
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    files: BootFiles = DirFiles(args.dir) if args.dir else ImageFiles(args.image, args.offset)
    bc: BootControl = open_bootctl(args.chain, files)
    if args.command == "status":
        out = {
            "booted": bc.booted(),
            "order": bc.boot_order(),
            "slots": {s: vars(st) for s, st in bc.states().items()},
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    elif args.command == "mark-good":
        slot = args.slot or bc.booted()
        if slot is None:
            raise DistbuildError(
                "no slot given and the kernel command line names none",
                hint="pass the slot: mark-good a|b",
            )
        bc.mark_good(slot)
    elif args.command == "set-next":
        bc.set_next(args.slot, args.tries)
    elif args.command == "mark-unbootable":
        bc.mark_unbootable(args.slot)
    return 0


def main() -> int:
    try:
        return run(sys.argv[1:])
    except DistbuildError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        print("hint: is the boot partition mounted read-write?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
