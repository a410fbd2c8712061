"""The ``run`` loop: poll the channel with jitter, apply, back off on errors.

A node that polls on the hour with the rest of its fleet would hit the
channel's server all at once, so each wait is the poll interval plus a random
jitter. A failing poll (server down, network gone) is retried sooner, with an
exponential back-off that never exceeds the poll interval. A refusal (a
tampered or expired channel) is not an outage: it is retried at the normal
interval, as the publisher may fix it. While an installed update waits for a
FleetLock reboot lock, the lock is asked for again every minute at most.

A configuration that cannot be used (unreadable YAML, an unknown key, a bad
value) does not end the daemon: under init that would only restart it in a
tight loop. It says what is wrong once, then idles, reading the file again
every ``config_retry`` seconds; ``distbuild-update status`` shows the error.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from distbuild.core.errors import DistbuildError
from distbuild.node.tufclient import Refused
from distbuild.node.updater import NodeUpdater

log = logging.getLogger("distbuild.node")

LOCK_RETRY = 60.0
CONFIG_RETRY = 60.0


@dataclass
class Backoff:
    """Exponential back-off with full jitter, capped at ``cap`` seconds."""

    base: float
    cap: float
    failures: int = 0

    def next(self, rng: random.Random) -> float:
        self.failures += 1
        return rng.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1))) + self.base

    def reset(self) -> None:
        self.failures = 0


def poll_wait(interval: float, jitter: float, rng: random.Random) -> float:
    """The next wait: the interval plus up to ``jitter`` seconds more."""
    return interval + rng.uniform(0, jitter)


def run_loop(
    make: Callable[[], NodeUpdater],
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    rng: random.Random | None = None,
    config_retry: float = CONFIG_RETRY,
) -> int:
    """Poll until ``stop`` is set (or once); returns 0, or the last error's exit code.

    With ``once``, an unusable configuration is raised; otherwise the loop idles
    until it is fixed (see the module's docstring).
    """
    stop = stop or threading.Event()
    rng = rng or random.Random()
    backoff: Backoff | None = None
    broken: str | None = None  # the configuration error last reported
    code = 0
    while not stop.is_set():
        try:
            updater = make()  # re-read config and release each round
        except DistbuildError as e:
            if once:
                raise
            broken = _idle(e, broken, config_retry)
            code = e.exit_code
            stop.wait(config_retry)
            continue
        if broken is not None:
            log.warning("the configuration is usable again; polling the channel")
            broken, backoff = None, None
        cfg = updater.config
        if backoff is None:
            backoff = Backoff(max(1.0, cfg.retry_wait), cfg.poll_interval)
        code, wait = _round(updater, backoff, rng)
        if once:
            break
        stop.wait(wait)
    return code


def _idle(e: DistbuildError, reported: str | None, retry: float) -> str:
    """Say once (per distinct error) that the daemon idles on a bad configuration."""
    text = e.message + (f" (hint: {e.hint})" if e.hint else "")
    if text != reported:
        log.error(
            "%s; not polling until this is fixed (reading it again every %.0f s)", text, retry
        )
    return text


def _round(updater: NodeUpdater, backoff: Backoff, rng: random.Random) -> tuple[int, float]:
    """One poll: (exit code, seconds to wait before the next)."""
    cfg = updater.config
    try:
        state = updater.reconcile()
        if state.pending is not None and not state.pending.reboot_requested:
            outcome = updater.request_reboot()
        else:
            outcome = updater.apply()
        log.info("%s", outcome.message)
        backoff.reset()
        wait = poll_wait(cfg.poll_interval, cfg.poll_jitter, rng)
        pending = updater.store.load().pending
        if pending is not None and not pending.reboot_requested:
            wait = min(wait, LOCK_RETRY + rng.uniform(0, LOCK_RETRY / 4))
        return 0, wait
    except Refused as e:
        log.error("refused: %s", e.message)
        return e.exit_code, poll_wait(cfg.poll_interval, cfg.poll_jitter, rng)
    except DistbuildError as e:
        wait = backoff.next(rng)
        log.error("%s; trying again in %.0f s", e.message, wait)
        return e.exit_code, wait
