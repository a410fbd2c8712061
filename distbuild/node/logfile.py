"""The updater's log: stderr for whoever runs it, and ``update.log`` on ``data``.

A node runs unattended, so every check, refusal, install and rollback is also
kept in the state directory (rotated at 1 MiB, two old files kept), where
``status`` points people and tests look.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOGGER = "distbuild.node"


class _FileLog(logging.handlers.RotatingFileHandler):
    """Marks the handler this module owns, so it is replaced, not duplicated."""


def attach(log_file: Path) -> None:
    """Log to ``log_file`` (once; a different file replaces the previous one)."""
    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        if isinstance(h, _FileLog):
            if Path(h.baseFilename) == log_file.absolute():
                return
            logger.removeHandler(h)
            h.close()
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = _FileLog(log_file, maxBytes=1 << 20, backupCount=2)
    except OSError:
        return  # a read-only or missing data partition must not stop status
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    logger.addHandler(handler)


def to_stderr(quiet: bool) -> None:
    """Also log to stderr (the command line; a daemon's stderr is the console)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        if not isinstance(h, _FileLog):
            logger.removeHandler(h)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING if quiet else logging.INFO)
    err.setFormatter(logging.Formatter("distbuild-update: %(message)s"))
    logger.addHandler(err)
