"""Kernel module selection: a named set plus everything it needs, in load order.

Reads the index files depmod wrote for the target kernel (modules.dep,
modules.softdep, modules.alias, modules.builtin), so selection is plain
text processing on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distbuild.core.errors import RecipeError
from distbuild.rootfs.rootpath import RootDir


def norm(name: str) -> str:
    """Module names treat '-' and '_' alike."""
    return name.replace("-", "_")


def _name_of(rel: str) -> str:
    base = rel.rsplit("/", 1)[-1]
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return norm(base)


@dataclass
class ModuleIndex:
    root: Path  # .../lib/modules/<release>
    deps: dict[str, list[str]] = field(default_factory=dict)  # path -> dep paths
    by_name: dict[str, str] = field(default_factory=dict)  # name -> path
    builtin: set[str] = field(default_factory=set)
    softdeps: dict[str, list[str]] = field(default_factory=dict)  # name -> pre names
    aliases: dict[str, list[str]] = field(default_factory=dict)  # exact alias -> names

    @classmethod
    def load(cls, root: Path) -> ModuleIndex:
        ix = cls(root)
        for line in (root / "modules.dep").read_text().splitlines():
            path, _, deps = line.partition(":")
            ix.deps[path] = deps.split()
            ix.by_name[_name_of(path)] = path
        builtin = root / "modules.builtin"
        if builtin.exists():
            ix.builtin = {_name_of(p) for p in builtin.read_text().split()}
        softdep = root / "modules.softdep"
        if softdep.exists():
            for line in softdep.read_text().splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "softdep":
                    pre = words[3 : words.index("post:")] if "post:" in words else words[3:]
                    if words[2] == "pre:":
                        ix.softdeps.setdefault(norm(words[1]), []).extend(pre)
        alias = root / "modules.alias"
        if alias.exists():
            for line in alias.read_text().splitlines():
                words = line.split()
                if (
                    len(words) == 3
                    and words[0] == "alias"
                    and not any(c in words[1] for c in "*?[")
                ):
                    ix.aliases.setdefault(words[1], []).append(norm(words[2]))
        return ix

    def _lookup(self, name: str) -> list[str] | None:
        """Paths for a module name or exact alias; [] if built in; None if unknown."""
        n = norm(name)
        if n in self.by_name:
            return [self.by_name[n]]
        if n in self.builtin:
            return []
        if name in self.aliases:
            return [self.by_name[m] for m in sorted(set(self.aliases[name])) if m in self.by_name]
        return None

    def load_order(self, names: list[str], *, where: str | None = None) -> list[str]:
        """Module paths (relative to the release dir) for ``names`` and their
        dependencies and pre-softdeps, each after what it needs."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(path: str) -> None:
            if path in seen:
                return
            seen.add(path)
            for pre in self.softdeps.get(_name_of(path), []):
                for p in self._lookup(pre) or []:
                    visit(p)
            for dep in self.deps.get(path, []):
                visit(dep)
            order.append(path)

        for name in names:
            paths = self._lookup(name)
            if paths is None:
                raise RecipeError(
                    f"kernel module {name!r} is not in kernel {self.root.name}",
                    hint="check the name against the kernel package's modules.order",
                    where=where,
                    key="kernel.modules",
                )
            for p in paths:
                visit(p)
        return order

    def copy(self, paths: list[str], tree: RootDir, dest: str) -> None:
        """Copy modules (and the kernel's builtin lists) into ``dest`` (a release dir) of ``tree``.

        Both sides are resolved inside their roots: modules.dep cannot name a
        file outside the release directory, the image cannot redirect a write.
        """
        source = RootDir(self.root)
        tree.mkdirs(dest)
        names = ("modules.builtin", "modules.builtin.modinfo", "modules.order")
        for rel in [*paths, *(n for n in names if source.lstat(n, follow=True) is not None)]:
            tree.write_file(f"{dest}/{rel}", source.read_bytes(rel), 0o644)
