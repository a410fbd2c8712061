"""What ``distbuild-update`` does: check, apply, bless, roll back, report.

One :class:`NodeUpdater` per run. Every command first reconciles the saved
state with how the node actually came up (:meth:`NodeUpdater.reconcile`): an
update that was set to boot next but is not what booted failed, and its
version is recorded as rolled back here so it is never installed again.

The install order is DESIGN.md §4's: the inactive slot is marked unbootable
before the first byte is written, its payload is streamed and verified
(hash while writing, then a read-back), its kernel, initramfs, the node's
board's device tree (if the release has one for it) and boot entry are written, and only then is it set to boot next with N tries.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from distbuild.core.arch import ARCHES
from distbuild.core.bootctl.base import other
from distbuild.core.errors import DistbuildError
from distbuild.core.releases import seed_from
from distbuild.node import clock, logfile, system
from distbuild.node.candidate import check_targets, slot_boot
from distbuild.node.config import Config, NodePaths, ReleaseInfo, read_release
from distbuild.node.http import Http, Limits
from distbuild.node.install import PayloadWriter, RetryPolicy
from distbuild.node.reboot import FleetLock, LockAnswer, write_kured_sentinel
from distbuild.node.state import NodeState, Pending, Result, RolledBack, StateStore, now_iso
from distbuild.node.tufclient import (
    BOOT,
    ROOT_IMAGE,
    Candidate,
    ChannelClient,
    Selection,
    now_epoch,
    select,
)

log = logging.getLogger("distbuild.node")


@dataclass(frozen=True)
class Outcome:
    """What a command did, for the CLI to print (and ``--json``)."""

    action: str
    ok: bool
    message: str
    version: str | None = None
    rebooting: bool = False


class NodeUpdater:
    """The updater for one node: its config, paths, release and state."""

    def __init__(self, config: Config, paths: NodePaths, http: Http | None = None) -> None:
        self.config = config
        self.paths = paths
        self.release: ReleaseInfo = read_release(paths.release)
        self.image = config.image or self.release.image
        self.arch = self.release.arch
        self.board = config.board or self.release.board
        self.chain = config.boot_chain or ARCHES[self.arch].boot_chain
        self.store = StateStore(paths.at(config.state_dir))
        logfile.attach(self.store.log_file)
        self.http = http or Http(limits(config))
        self._node_id: str | None = None

    # identity

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = system.node_id(self.config, self.paths)
        return self._node_id

    @property
    def seed(self) -> int:
        return self.config.seed if self.config.seed is not None else seed_from(self.node_id)

    def client(self) -> ChannelClient:
        return ChannelClient(
            self.config.channel_url,
            self.config.channel,
            self.store.metadata_dir,
            self.paths.trust_anchor,
            self.http,
        )

    # bookkeeping

    def _result(
        self, state: NodeState, action: str, ok: bool, message: str, version: str | None = None
    ) -> Outcome:
        state.record(Result(now_iso(), ok, action, message, version))
        self.store.save(state)
        (log.info if ok else log.error)("%s: %s", action, message)
        return Outcome(action, ok, message, version)

    def reconcile(self) -> NodeState:
        """Compare the saved state with what booted; record an update that fell back."""
        state = self.store.load()
        p = state.pending
        if p is None or not p.reboot_requested:
            return state
        booted = system.booted(self.paths)
        if booted == p.slot and self.release.version == p.version:
            return state  # on trial: mark-good decides
        if booted == p.from_slot:
            with system.boot_control(self.config, self.paths, self.chain) as bc:
                states = bc.states()
                if states[p.slot].bootable and bc.boot_order()[:1] == [p.slot]:
                    return state  # not rebooted yet
                bc.mark_unbootable(p.slot)
            reason = (
                f"{p.version} did not come up in slot {p.slot}: the boot loader fell back "
                f"to slot {p.from_slot} ({self.release.version})"
            )
            state.rolled_back.append(RolledBack(p.version, p.slot, now_iso(), reason))
            state.pending = None
            state.lock_held = state.lock_held or p.lock_held
            log.error("rolled back: %s", reason)
            self._result(state, "boot", False, f"rolled back: {reason}", p.version)
        return state

    # check and apply

    def check(self, allow_downgrade: bool = False) -> tuple[Outcome, Candidate | None]:
        """Refresh the channel and pick the release to install; nothing is written."""
        state = self.reconcile()
        state.last_check = now_iso()
        try:
            client = self.client()
            index = client.refresh()
            clock.record_verified(self.store.directory, clock.newest_signed_time(index))
            clock.require(now_epoch(), clock.floor(self.release.epoch, self.store.directory))
            selection = select(
                index,
                image=self.image,
                arch=self.arch,
                current=self.release.version,
                seed=self.seed,
                now=now_epoch(),
                failed=state.failed_versions(),
                allow_downgrade=allow_downgrade or self.config.allow_downgrade,
            )
            for note in selection.notes:
                log.info("%s", note)
            if selection.release is None:
                ok = not selection.reason.startswith("refusing")
                return self._result(state, "check", ok, selection.reason), None
            candidate = client.candidate(selection.release, self.arch, self.board)
            check_targets(candidate, self.image, self.arch, self.board)
        except DistbuildError as e:
            self._result(state, "check", False, _reason(e))
            raise
        message = _offer(selection, candidate)
        return self._result(state, "check", True, message, candidate.version), candidate

    def apply(self, allow_downgrade: bool = False, reboot: bool = True) -> Outcome:
        """Install the selected release into the inactive slot and act on the reboot policy."""
        state = self.store.load()
        p = state.pending
        if p is not None and not p.reboot_requested and reboot:
            return self.request_reboot()
        outcome, candidate = self.check(allow_downgrade)
        if candidate is None:
            return outcome
        state = self.store.load()
        if state.pending is not None and state.pending.version == candidate.version:
            msg = f"{candidate.version} is installed in slot {state.pending.slot}; waiting for a reboot"
            return Outcome("apply", True, msg, candidate.version)
        try:
            self._install(candidate, state)
        except DistbuildError as e:
            return self._failed(state, "apply", e, candidate.version)
        if reboot:
            return self.request_reboot()
        return Outcome(
            "apply", True, f"{candidate.version} installed; reboot to use it", candidate.version
        )

    def _failed(self, state: NodeState, action: str, e: DistbuildError, version: str) -> Outcome:
        self._result(state, action, False, _reason(e), version)
        raise e

    def _install(self, candidate: Candidate, state: NodeState) -> None:
        booted = system.booted(self.paths)
        if booted is None:
            raise DistbuildError(
                "cannot tell which slot is running (no distbuild.slot= on the kernel command line)",
                hint="distbuild-update installs only on a node booted from an A/B slot",
            )
        slot = other(booted)
        device = system.slot_device(self.config, self.paths, slot)
        root = candidate.files[ROOT_IMAGE]
        # The small signed files first: boot.json carries the root hash every
        # block of the payload is checked against before it is written, and a
        # bad kernel is better refused before the slot is touched.
        boot, verity = slot_boot(self.http, candidate)
        if verity is None:
            log.warning(
                "%s has no dm-verity parameters (an older channel): the payload is checked "
                "only after it is written",
                candidate.files[BOOT].path,
            )
        writer = PayloadWriter(
            self.http,
            self.store,
            root,
            slot,
            device,
            RetryPolicy(self.config.retries, self.config.retry_wait, self.config.retry_wait_max),
            verity=verity,
        )
        writer.check_fits()
        with system.boot_control(self.config, self.paths, self.chain) as bc:
            # The inactive slot must never be picked while it is being rewritten.
            bc.mark_unbootable(slot)
            if state.pending is not None:
                state.pending = None
                self.store.save(state)
            log.info("writing %s %s into slot %s (%s)", self.image, candidate.version, slot, device)
            writer.write()
            bc.install(slot, boot)
            bc.set_next(slot, self.config.tries)
        self.store.clear_progress()
        state.pending = Pending(
            slot=slot,
            version=candidate.version,
            from_slot=booted,
            from_version=self.release.version,
            installed_at=now_iso(),
        )
        self._result(
            state,
            "apply",
            True,
            f"{candidate.version} written to slot {slot} and set to boot next "
            f"({self.config.tries} tries)",
            candidate.version,
        )

    # reboot

    def request_reboot(self) -> Outcome:
        """Act on the reboot policy for the pending update."""
        state = self.store.load()
        p = state.pending
        if p is None:
            return Outcome("reboot", True, "no update waits for a reboot")
        policy = self.config.reboot
        if policy == "fleetlock":
            answer: LockAnswer = self._fleetlock().pre_reboot()
            if not answer.granted:
                msg = (
                    f"{p.version} installed; waiting for the FleetLock reboot lock "
                    f"(group {self.config.fleetlock_group}): {answer}"
                )
                return self._result(state, "reboot", True, msg, p.version)
            p.lock_held = True
            state.lock_held = True
        elif policy == "kured":
            write_kured_sentinel(self.paths.at(self.config.kured_sentinel), p.version)
        p.reboot_requested = True
        if policy in ("never", "kured"):
            how = "kured reboots it" if policy == "kured" else "reboot when convenient"
            return self._result(state, "reboot", True, f"{p.version} installed; {how}", p.version)
        self._result(
            state, "reboot", True, f"rebooting into {p.version} (slot {p.slot})", p.version
        )
        self._reboot()
        return Outcome("reboot", True, f"rebooting into {p.version}", p.version, rebooting=True)

    def _fleetlock(self) -> FleetLock:
        assert self.config.fleetlock_url is not None
        return FleetLock(
            self.config.fleetlock_url,
            system.app_id(self.node_id),
            self.config.fleetlock_group,
            self.http,
        )

    def _reboot(self) -> None:
        from distbuild.core.run import run

        log.warning("rebooting: %s", " ".join(self.config.reboot_command))
        run(list(self.config.reboot_command), hint="set reboot_command in the updater config")

    # after boot

    def mark_good(self) -> Outcome:
        """Run the health check, then bless the booted slot and finish the update."""
        state = self.reconcile()
        booted = system.booted(self.paths)
        if booted is None:
            raise DistbuildError("no distbuild.slot= on the kernel command line; nothing to mark")
        self._health_check()
        with system.boot_control(self.config, self.paths, self.chain) as bc:
            bc.mark_good(booted)
        p = state.pending
        message = f"slot {booted} ({self.release.version}) marked good"
        if p is not None and p.slot == booted and p.version == self.release.version:
            state.updated = [
                *state.updated[-9:],
                {"version": p.version, "from": p.from_version, "slot": booted, "at": now_iso()},
            ]
            state.pending = None
            message = f"updated from {p.from_version} to {p.version}; {message}"
        if state.lock_held and self.config.reboot == "fleetlock" and self.config.fleetlock_url:
            answer = self._fleetlock().steady_state()
            if answer.granted:
                state.lock_held = False
                message += "; FleetLock reboot lock released"
            else:
                message += f"; FleetLock steady-state refused: {answer} (will retry)"
        return self._result(state, "mark-good", True, message, self.release.version)

    def _health_check(self) -> None:
        probe = self.store.directory / ".health"
        try:
            self.store.directory.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok\n")
            probe.unlink()
        except OSError as e:
            raise DistbuildError(f"health check: state directory not writable: {e}") from None
        if self.config.health_check:
            from distbuild.core.run import run

            proc = run(list(self.config.health_check), check=False, capture=True, timeout=600)
            if proc.returncode != 0:
                tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise DistbuildError(
                    f"health check {self.config.health_check[0]} failed "
                    f"(exit {proc.returncode}): {' / '.join(tail)}",
                    hint="the slot stays on trial; the boot loader falls back if it keeps failing",
                )

    def health_failed(self, reason: str) -> Outcome:
        """The health check failed: a slot on trial rolls back by itself (boot
        counting alone would fall back only at the next boot, which nothing
        makes); a slot already good stays, so a broken check cannot loop
        reboots, and the failure is in ``status``."""
        state = self.reconcile()
        booted = system.booted(self.paths)
        if booted is None:
            raise DistbuildError("no distbuild.slot= on the kernel command line; nothing to judge")
        with system.boot_control(self.config, self.paths, self.chain) as bc:
            good = bc.states()[booted].good
        where = f"slot {booted} ({self.release.version})"
        if good:
            message = f"health check failed on {where}, which is good; not rolling back: {reason}"
            return self._result(state, "health", False, message, self.release.version)
        failed = f"health check failed on {where}: {reason}"
        self._result(state, "health", False, failed, self.release.version)
        return self.rollback(failed)

    def rollback(self, why: str = "by hand") -> Outcome:
        """Boot the other slot next (it must hold a good, installed version)."""
        state = self.reconcile()
        booted = system.booted(self.paths)
        if booted is None:
            raise DistbuildError("no distbuild.slot= on the kernel command line; cannot roll back")
        target = other(booted)
        with system.boot_control(self.config, self.paths, self.chain) as bc:
            st = bc.states()[target]
            if not st.good or st.version is None:
                raise DistbuildError(
                    f"slot {target} holds no version known to be good; nothing to roll back to",
                    hint="install a release with 'distbuild-update apply' instead",
                )
            bc.set_next(target, self.config.tries)
        reason = f"rolled back to {st.version} in slot {target}: {why}"
        state.rolled_back.append(RolledBack(self.release.version, booted, now_iso(), reason))
        state.pending = Pending(target, st.version, booted, self.release.version, now_iso())
        self._result(state, "rollback", True, reason, st.version)
        return self.request_reboot()

    # status

    def status(self) -> dict[str, Any]:
        """Everything a person needs to see what the updater did and where the node is."""
        state = self.reconcile()
        booted = system.booted(self.paths)
        slots: dict[str, Any] = {}
        try:
            with system.boot_control(self.config, self.paths, self.chain) as bc:
                for name, st in bc.states().items():
                    slots[name] = asdict(st)
                order = bc.boot_order()
        except DistbuildError as e:
            slots = {"error": e.message}
            order = []
        progress = self.store.progress()
        return {
            "image": self.image,
            "arch": self.arch,
            "board": self.board,
            "channel": self.config.channel,
            "channel_url": self.config.channel_url,
            "booted": {"slot": booted, "version": self.release.version},
            "other": {
                "slot": other(booted) if booted else None,
                "version": slots.get(other(booted), {}).get("version") if booted else None,
            },
            "slots": slots,
            "boot_order": order,
            "last_check": state.last_check,
            "last_result": asdict(state.last_result) if state.last_result else None,
            "pending": asdict(state.pending) if state.pending else None,
            "download": asdict(progress) if progress else None,
            "rolled_back": [asdict(r) for r in state.rolled_back],
            "failures": [asdict(r) for r in state.failures],
            "updated": state.updated,
            "reboot": self.config.reboot,
            "fleetlock_held": state.lock_held,
        }


def limits(config: Config) -> Limits:
    """The HTTP limits ``update.yaml`` sets."""
    return Limits(
        read_timeout=config.read_timeout,
        min_rate=config.min_rate,
        rate_window=config.rate_window,
        deadline=config.request_deadline,
        tries=max(1, config.retries),
        retry_wait=config.retry_wait,
        retry_wait_max=config.retry_wait_max,
    )


def _offer(selection: Selection, candidate: Candidate) -> str:
    size = candidate.files[ROOT_IMAGE].length
    kind = "downgrade to" if selection.downgrade else "update to"
    return f"{kind} {candidate.version} available ({size} bytes); {selection.reason}"


def _reason(e: DistbuildError) -> str:
    return e.message + (f" ({e.hint})" if e.hint else "")
