"""The one architecture table (DESIGN.md §2).

Everything that differs between architectures and is not a choice of the
recipe author lives here, so the rest of the code asks the table instead of
testing arch names.
"""

from __future__ import annotations

from dataclasses import dataclass

from distbuild.core.errors import UsageError


@dataclass(frozen=True)
class Platform:
    """An OCI platform, normalised by containerd's rules."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    def as_oci(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` and normalise it (containerd's rules)."""
        parts = text.strip().lower().split("/")
        if len(parts) == 1:
            parts = ["linux", *parts]
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"invalid platform {text!r}",
                hint="write it as os/architecture[/variant], e.g. linux/arm/v7",
            )
        return normalize(cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None))


_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
}


def normalize(p: Platform) -> Platform:
    """containerd's platforms.Normalize: aliases folded, default variants applied."""
    arch = _ARCH_ALIASES.get(p.architecture, p.architecture)
    variant = p.variant
    if p.architecture == "armhf" and variant is None:
        variant = "v7"
    if p.architecture == "armel" and variant is None:
        variant = "v6"
    if arch == "arm64":
        variant = None if variant in (None, "v8", "8") else variant
    elif arch == "amd64":
        variant = None if variant in (None, "v1", "1") else variant
    elif arch == "arm":
        if variant is None:
            variant = "v7"
        elif variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    return Platform(p.os, arch, variant)


@dataclass(frozen=True)
class Arch:
    name: str
    debian: str
    platform: Platform
    qemu_system: str
    qemu_user: str
    uname: str
    elf_machine: int
    elf_class: int  # 1 = 32-bit, 2 = 64-bit
    boot_chain: str
    efi_arch: str | None  # systemd-boot's file suffix, e.g. "x64"


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            name="armv7",
            debian="armhf",
            platform=Platform("linux", "arm", "v7"),
            qemu_system="arm",
            qemu_user="arm",
            uname="armv7l",
            elf_machine=40,  # EM_ARM
            elf_class=1,
            boot_chain="u-boot",
            efi_arch=None,
        ),
        Arch(
            name="arm64",
            debian="arm64",
            platform=Platform("linux", "arm64", None),
            qemu_system="aarch64",
            qemu_user="aarch64",
            uname="aarch64",
            elf_machine=183,  # EM_AARCH64
            elf_class=2,
            boot_chain="systemd-boot",
            efi_arch="aa64",
        ),
        Arch(
            name="amd64",
            debian="amd64",
            platform=Platform("linux", "amd64", None),
            qemu_system="x86_64",
            qemu_user="x86_64",
            uname="x86_64",
            elf_machine=62,  # EM_X86_64
            elf_class=2,
            boot_chain="systemd-boot",
            efi_arch="x64",
        ),
    )
}

BOOT_CHAINS = ("u-boot", "systemd-boot")


def get_arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise UsageError(
            f"unknown architecture {name!r}",
            hint=f"choose one of: {', '.join(ARCHES)} (or 'all')",
        ) from None


def parse_arches(names: tuple[str, ...] | list[str]) -> list[Arch]:
    """Expand ``all`` and comma lists into arches, in the table's order."""
    wanted: set[str] = set()
    for item in names:
        for name in item.split(","):
            name = name.strip()
            if name == "all":
                wanted.update(ARCHES)
            elif name:
                wanted.add(get_arch(name).name)
    if not wanted:
        raise UsageError("no architecture given", hint="pass --arch armv7, arm64, amd64 or all")
    return [a for a in ARCHES.values() if a.name in wanted]


def arch_for_platform(platform: Platform) -> Arch | None:
    p = normalize(platform)
    for a in ARCHES.values():
        if normalize(a.platform) == p:
            return a
    return None


def host_arch() -> Arch | None:
    import platform as _platform

    machine = _platform.machine()
    for a in ARCHES.values():
        if a.uname == machine or a.debian == machine:
            return a
    return None
