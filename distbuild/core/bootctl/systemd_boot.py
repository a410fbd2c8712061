"""systemd-boot boot control: one Type #1 entry per slot, with boot counting.

State lives in entry *file names* on the ESP, so every change is a rename,
which systemd-boot itself also uses for counting (Automatic Boot Assessment):

- ``loader/entries/distbuild-<rank>-<slot>+<left>[-<done>].conf``: on trial;
  before booting it, systemd-boot renames it to ``+<left-1>-<done+1>``. At
  ``+0-<done>`` it is *bad* and sorted after every other entry, so the loader
  falls back on its own.
- ``loader/entries/distbuild-<rank>-<slot>.conf``: good (no counter).
- ``loader/entries/distbuild-<slot>.conf.off``: disabled; systemd-boot only
  reads ``*.conf``, so it never boots it.

With no ``default`` in loader.conf and ``timeout 0``, systemd-boot boots the
first entry of its sort order: bad entries last, then entry ids in
*descending* version order. ``rank`` 1 therefore boots before rank 0; the
slot set to boot next gets rank 1 and the other slot rank 0.

A power cut between two renames leaves at worst both slots at the same rank
(the loader then orders by slot letter) or one entry missing; either way a
slot that was good or freshly verified boots. The kernel and initramfs of a
slot are only written while its entry is disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from distbuild.core.bootctl.base import (
    SLOTS,
    BootControl,
    SlotBoot,
    SlotState,
    check_slot,
    other,
    register,
)
from distbuild.core.errors import DistbuildError

ENTRIES = "loader/entries"
_ENABLED = re.compile(
    r"^distbuild-(?P<rank>[01])-(?P<slot>[ab])(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$"
)
_DISABLED = re.compile(r"^distbuild-(?P<slot>[ab])\.conf\.off$")
MAX_TRIES = 99


def kernel_path(slot: str) -> str:
    return f"distbuild/{slot}/linux"


def initrd_path(slot: str) -> str:
    return f"distbuild/{slot}/initrd"


def dtb_path(slot: str) -> str:
    """The slot's device tree, beside its kernel; its entry names it (``devicetree``)."""
    return f"distbuild/{slot}/board.dtb"


def disabled_name(slot: str) -> str:
    return f"distbuild-{slot}.conf.off"


def entry_name(slot: str, rank: int, left: int | None = None, done: int | None = None) -> str:
    counter = ""
    if left is not None:
        counter = f"+{left}" + (f"-{done}" if done else "")
    return f"distbuild-{rank}-{slot}{counter}.conf"


def entry_text(slot: str, boot: SlotBoot) -> str:
    """A Boot Loader Specification Type #1 entry for ``slot``."""
    devicetree = f"devicetree /{dtb_path(slot)}\n" if boot.dtb is not None else ""
    return (
        f"title distbuild {boot.version} (slot {slot})\n"
        f"version {boot.version}\n"
        f"linux /{kernel_path(slot)}\n"
        f"initrd /{initrd_path(slot)}\n"
        f"{devicetree}"
        f"options {boot.cmdline.strip()} distbuild.slot={slot}\n"
    )


@dataclass(frozen=True)
class Entry:
    """One slot's entry file as found on the ESP."""

    slot: str
    name: str
    enabled: bool
    rank: int = 0
    left: int | None = None  # None: no counter, i.e. good
    done: int = 0

    @property
    def bad(self) -> bool:
        return self.left == 0

    def sort_key(self) -> tuple[int, str]:
        # systemd-boot: entries with no tries left go last, then ids in
        # descending order (the caller sorts with reverse=True on the id).
        return (1 if self.bad else 0, self.name)


def parse_entry(name: str) -> Entry | None:
    m = _ENABLED.match(name)
    if m:
        return Entry(
            slot=m["slot"],
            name=name,
            enabled=True,
            rank=int(m["rank"]),
            left=int(m["left"]) if m["left"] is not None else None,
            done=int(m["done"] or 0),
        )
    m = _DISABLED.match(name)
    if m:
        return Entry(slot=m["slot"], name=name, enabled=False)
    return None


def _preferred(e: Entry) -> tuple[bool, bool, str]:
    return (e.enabled, not e.bad, e.name)


@register
class SystemdBoot(BootControl):
    """A/B boot control for UEFI machines booting systemd-boot."""

    chain = "systemd-boot"

    def entries(self) -> dict[str, Entry]:
        """Each slot's entry. With copies left by an interrupted rename, an
        enabled one wins over a disabled one, and among enabled ones the copy
        systemd-boot would boot first."""
        found: dict[str, Entry] = {}
        for name in self.files.list(ENTRIES):
            entry = parse_entry(name)
            if entry is None:
                continue
            have = found.get(entry.slot)
            if have is None or _preferred(entry) > _preferred(have):
                found[entry.slot] = entry
        return found

    def _path(self, name: str) -> str:
        return f"{ENTRIES}/{name}"

    def _rename(self, entry: Entry, name: str) -> None:
        if entry.name != name:
            self.files.rename(self._path(entry.name), self._path(name))

    def _drop_leftovers(self, slot: str, keep: str) -> None:
        """Remove other entries of ``slot``: copies an interrupted rename left behind."""
        for name in self.files.list(ENTRIES):
            e = parse_entry(name)
            if e is not None and e.slot == slot and name != keep:
                self.files.remove(self._path(name))

    def version(self, slot: str) -> str | None:
        entry = self.entries().get(slot)
        if entry is None:
            return None
        text = self.files.read(self._path(entry.name))
        if text is None:
            return None
        for line in text.decode(errors="replace").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "version":
                return value.strip() or None
        return None

    def states(self) -> dict[str, SlotState]:
        entries = self.entries()
        out = {}
        for slot in SLOTS:
            e = entries.get(slot)
            if e is None:
                out[slot] = SlotState(slot, False, 0, False, None)
                continue
            good = e.enabled and e.left is None
            tries = e.left if e.enabled and e.left is not None else 0
            out[slot] = SlotState(
                slot=slot,
                bootable=e.enabled and not e.bad,
                tries_left=tries,
                good=good,
                version=self.version(slot),
            )
        return out

    def boot_order(self) -> list[str]:
        enabled = [e for e in self.entries().values() if e.enabled]
        # Descending ids, but bad entries after all others (systemd-boot's order).
        enabled.sort(key=lambda e: e.name, reverse=True)
        enabled.sort(key=lambda e: e.bad)
        usable = [e.slot for e in enabled if not e.bad]
        # With only bad entries left, systemd-boot still boots the first one.
        return usable or [e.slot for e in enabled[:1]]

    def counters(self, slot: str) -> tuple[int | None, int]:
        """``(left, done)`` of the slot's boot counter; left is None when good or absent."""
        e = self.entries().get(slot)
        if e is None or not e.enabled:
            return None, 0
        return e.left, e.done

    def mark_unbootable(self, slot: str) -> None:
        check_slot(slot)
        e = self.entries().get(slot)
        if e is not None and e.enabled:
            self._rename(e, disabled_name(slot))

    def install(self, slot: str, boot: SlotBoot) -> None:
        check_slot(slot)
        if self.booted() == slot:
            raise DistbuildError(
                f"slot {slot} is the running system; refusing to overwrite it",
                hint=f"install into slot {other(slot)}",
            )
        self.mark_unbootable(slot)
        for name in self.files.list(ENTRIES):
            e = parse_entry(name)
            if e is not None and e.slot == slot and e.enabled:
                # A stray enabled copy (an interrupted rename) must go too.
                self.files.remove(self._path(name))
        self.files.write(kernel_path(slot), boot.kernel)
        self.files.write(initrd_path(slot), boot.initrd)
        if boot.dtb is not None:
            self.files.write(dtb_path(slot), boot.dtb)
        else:
            self.files.remove(dtb_path(slot))
        self.files.write(self._path(disabled_name(slot)), entry_text(slot, boot).encode())

    def set_next(self, slot: str, tries: int = 3) -> None:
        check_slot(slot)
        if not 1 <= tries <= MAX_TRIES:
            raise DistbuildError(
                f"tries must be between 1 and {MAX_TRIES}, not {tries}",
                hint="the default is 3",
            )
        entries = self.entries()
        if slot not in entries:
            raise DistbuildError(
                f"slot {slot} has no boot entry",
                hint="install a root into it first (distbuild disk write-slot, or the updater)",
            )
        # Demote the other slot first: until the last rename nothing new is
        # bootable, so a power cut in between boots the old slot.
        self._demote(entries.get(other(slot)))
        self._rename(entries[slot], entry_name(slot, 1, tries))
        self._drop_leftovers(slot, entry_name(slot, 1, tries))

    def mark_good(self, slot: str) -> None:
        check_slot(slot)
        entries = self.entries()
        e = entries.get(slot)
        if e is None or not e.enabled:
            raise DistbuildError(
                f"slot {slot} is not enabled, so it cannot be marked good",
                hint="set it to boot next first (set-next)",
            )
        # Bless first, then demote the other: in between, both rank 1 and a
        # bad other entry still sorts last.
        self._rename(e, entry_name(slot, 1))
        self._drop_leftovers(slot, entry_name(slot, 1))
        self._demote(entries.get(other(slot)))

    def _demote(self, e: Entry | None) -> None:
        if e is not None and e.enabled:
            name = entry_name(e.slot, 0, e.left, e.done if e.left is not None else None)
            self._rename(e, name)
            self._drop_leftovers(e.slot, name)
