"""Image definitions (``images/<name>.yaml``) as frozen models, per arch."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.core import names
from distbuild.core.arch import ARCHES, Arch
from distbuild.core.errors import RecipeError, UsageError
from distbuild.core.names import check_name
from distbuild.model import loader
from distbuild.model.boundary import OUTSIDE_HINT, Boundary
from distbuild.model.extensions import Extension, parse_extensions
from distbuild.model.loader import KeyPath
from distbuild.model.recipe import Recipe
from distbuild.model.schema import (
    UID_RANGE,
    Field,
    Spec,
    check,
    octal_mode,
    refuse_numeric_mode,
)

OUTPUTS = ("oci", "root", "disk", "netboot")

_BODY: Spec = {
    "packages": Field("str-list", doc="Debian package names"),
    "remove": Field("str-list", doc="paths (globs) dropped from the rootfs"),
    "files": Field("any-map", doc="path: content, or path: {content, mode}"),
    "symlinks": Field("str-map", doc="path: target"),
    "directories": Field("str-list"),
}

IMAGE_SPEC: Spec = {
    "name": Field(str, required=True),
    "description": Field(str, default=""),
    "version": Field(str),
    "outputs": Field("str-list", default=["oci"]),
    "kernel": Field(bool, default=False, doc="install the recipe's kernel package"),
    "busybox_links": Field(bool, default=False, doc="create /bin links for busybox applets"),
    "overlay": Field(str, doc="a directory copied over the rootfs"),
    "users": Field(list),
    "groups": Field(list),
    "config": Field(
        {
            "entrypoint": Field("str-list"),
            "cmd": Field("str-list"),
            "env": Field("str-list"),
            "workdir": Field(str),
            "user": Field(str),
            "labels": Field("str-map"),
        }
    ),
    "overrides": Field("any-map", doc="per-arch additions, keyed by arch name"),
    "extensions": Field("any-map", doc="path: {mode, fetch: {url, sha256: {arch: hex}}}"),
    **_BODY,
}

_USER_SPEC: Spec = {
    "name": Field(str, required=True),
    "uid": Field(int, required=True, range=UID_RANGE),
    "gid": Field(int, range=UID_RANGE),
    "home": Field(str),
    "shell": Field(str, default="/bin/sh"),
    "groups": Field("str-list"),
}
_GROUP_SPEC: Spec = {
    "name": Field(str, required=True),
    "gid": Field(int, required=True, range=UID_RANGE),
}
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_FIX_HINT = "fix that line, then run 'distbuild recipes check'"
MAX_PATH = 4096
MAX_OVERLAY_ENTRIES = 100_000


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True)
class FileEntry:
    path: str
    content: bytes
    mode: int


@dataclass(frozen=True)
class ImageDef:
    """One image definition resolved for one arch."""

    name: str
    path: Path
    arch: Arch
    description: str
    version: str | None
    outputs: tuple[str, ...]
    kernel: bool
    busybox_links: bool
    packages: tuple[str, ...]
    remove: tuple[str, ...]
    files: tuple[FileEntry, ...]
    symlinks: tuple[tuple[str, str], ...]
    directories: tuple[str, ...]
    overlay: Path | None
    users: tuple[User, ...]
    groups: tuple[Group, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str | None
    user: str | None
    labels: tuple[tuple[str, str], ...]
    extensions: tuple[Extension, ...] = ()
    # Where each package was asked for (file:line, key path), for errors found later.
    package_origin: tuple[tuple[str, str, str], ...] = ()
    # Where each path entry was written: ("files:/etc/x" or "directories:2", file:line, key).
    entry_origin: tuple[tuple[str, str, str], ...] = ()

    def locate(self, entry: str) -> tuple[str | None, str | None]:
        """``file:line`` and key path of a path entry (``files:/etc/x``, ``users:0``...)."""
        for name, where, key in self.entry_origin:
            if name == entry:
                return where, key
        return None, None

    def origin_of(self, package: str) -> tuple[str | None, str | None]:
        for name, where, key in self.package_origin:
            if name == package:
                return where, key
        return None, None


# An entry of a definition and where it was written: (entry, file:line, key path).
Origin = tuple[str, str, str]

# Keys whose entries are paths inside the image's root (map keys or list items).
_ROOT_PATHS = ("files", "symlinks", "directories", "remove")


def _entry_origins(
    doc: loader.Document, body: dict[str, Any], prefix: loader.KeyPath, offsets: dict[str, int]
) -> dict[str, Origin]:
    """Each path entry of ``body`` (at ``prefix`` in the file): its path, file:line, key."""
    out = {}
    for name in _ROOT_PATHS:
        value = body[name]
        pairs = [(k, k) for k in value] if isinstance(value, dict) else list(enumerate(value))
        for k, entry in pairs:
            path = (*prefix, name, k)
            ident = k if isinstance(k, str) else k + offsets.get(name, 0)
            out[f"{name}:{ident}"] = (str(entry), doc.where(path), loader.dotted(path))
    return out


def _check_inside(value: str, where: str, key: str) -> None:
    """A path meant for the image's root must not climb out of it or hold a NUL."""
    hint = "paths name files inside the image; fix that line, then run 'distbuild recipes check'"
    if "\0" in value:
        raise RecipeError("a path cannot contain a NUL character", hint, where=where, key=key)
    depth = 0
    for part in value.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise RecipeError(
                    f"{value!r} leaves the image's root ('..' above /)", hint, where=where, key=key
                )
        elif part not in ("", "."):
            depth += 1


def image_names(project: Path) -> list[str]:
    return sorted(p.stem for p in (project / "images").glob("*.yaml"))


def load_image(
    project: Path,
    name: str,
    recipe: Recipe,
    extra: dict[str, Any] | None = None,
    allow: Sequence[Path] = (),
) -> ImageDef:
    """Load ``images/<name>.yaml`` for ``recipe``'s arch.

    The definition may read files (includes, overlay) inside ``project`` and
    the ``allow`` paths only.
    """
    path = _definition_path(project, name)
    context = {"arch": recipe.arch, "recipe": recipe, **(extra or {})}
    boundary = Boundary.of(project, allow)
    doc = loader.load(path, context, boundary)
    data = check(doc, IMAGE_SPEC)
    _check_head(doc, data, path)
    packages, origins = _apply_overrides(doc, data, recipe.arch)
    if data["kernel"]:
        packages.append((recipe.kernel_package, str(recipe.path), "kernel.package"))
    _check_packages(packages)
    for entry, where, key in origins.values():
        _check_inside(entry, where, key)
    files = [_file(doc, fpath, spec) for fpath, spec in data["files"].items()]
    _check_paths(doc, data)
    users, groups = _users(doc, data), _groups(doc, data)
    _check_homes(doc, data, users, origins)
    overlay = _overlay(doc, path, boundary, data["overlay"])
    if overlay is not None:
        origins["overlay"] = (str(overlay), doc.where(("overlay",)), "overlay")
    _check_version(doc, data["version"])
    extensions = parse_extensions(doc, data["extensions"], recipe.arch)
    return _image_def(
        path, recipe.arch, data, packages, files, users, groups, overlay, origins, extensions
    )


def _image_def(
    path: Path,
    arch: Arch,
    data: dict[str, Any],
    packages: list[Origin],
    files: list[FileEntry],
    users: list[User],
    groups: list[Group],
    overlay: Path | None,
    origins: dict[str, Origin],
    extensions: tuple[Extension, ...],
) -> ImageDef:
    """The frozen model of the checked, merged definition."""
    cfg = data["config"]
    return ImageDef(
        name=path.stem,
        path=path,
        arch=arch,
        description=data["description"],
        version=data["version"],
        outputs=tuple(data["outputs"]),
        kernel=data["kernel"],
        busybox_links=data["busybox_links"],
        packages=tuple(dict.fromkeys(p for p, _, _ in packages)),
        remove=tuple(data["remove"]),
        files=tuple(files),
        symlinks=tuple(sorted(data["symlinks"].items())),
        directories=tuple(data["directories"]),
        overlay=overlay,
        users=tuple(users),
        groups=tuple(groups),
        entrypoint=tuple(cfg["entrypoint"]),
        cmd=tuple(cfg["cmd"]),
        env=tuple(cfg["env"]),
        workdir=cfg["workdir"],
        user=cfg["user"],
        labels=tuple(sorted(cfg["labels"].items())),
        extensions=extensions,
        package_origin=tuple(packages),
        entry_origin=tuple((k, where, key) for k, (_, where, key) in origins.items()),
    )


def _definition_path(project: Path, name: str) -> Path:
    check_name(name, names.IMAGE)
    path = project / "images" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(image_names(project)) or "none"
        raise UsageError(f"unknown image {name!r}", hint=f"images in {project / 'images'}: {known}")
    return path


def _check_head(doc: loader.Document, data: dict[str, Any], path: Path) -> None:
    """The name matches the file; every output is one distbuild builds."""
    if data["name"] != path.stem:
        raise doc.error(("name",), f"says {data['name']!r} but the file is {path.name}")
    for i, out in enumerate(data["outputs"]):
        if out not in OUTPUTS:
            raise doc.error(
                ("outputs", i), f"unknown output {out!r}", hint=f"outputs: {', '.join(OUTPUTS)}"
            )


def _apply_overrides(
    doc: loader.Document, data: dict[str, Any], arch: Arch
) -> tuple[list[Origin], dict[str, Origin]]:
    """Merge ``arch``'s override into ``data`` (checking every arch's); return the origin
    of each package and of each path entry."""
    packages = _package_origins(doc, data["packages"], ())
    origins = _entry_origins(doc, data, (), {})
    for key, value in data.pop("overrides").items():
        if key not in ARCHES:
            raise doc.error(
                ("overrides", key), f"unknown arch {key!r}", hint=f"arches: {', '.join(ARCHES)}"
            )
        body = check(doc, _BODY, value, ("overrides", key))
        if key != arch.name:
            continue
        packages += _package_origins(doc, body["packages"], ("overrides", key))
        offsets = {k: len(v) for k, v in data.items() if isinstance(v, list)}
        origins.update(_entry_origins(doc, body, ("overrides", key), offsets))
        for k, v in body.items():
            _graft(doc, ("overrides", key, k), (k,), 0 if isinstance(v, dict) else len(data[k]))
            data[k] = {**data[k], **v} if isinstance(v, dict) else data[k] + v
    return packages, origins


def _package_origins(doc: loader.Document, packages: list[str], prefix: KeyPath) -> list[Origin]:
    # A list written as one name has no entry lines: the key's own line is the entry's.
    path = (*prefix, "packages")
    return [(p, doc.where((*path, i)), loader.dotted((*path, i))) for i, p in enumerate(packages)]


def _check_packages(packages: list[Origin]) -> None:
    """Each package name is Debian's grammar; an error names the line that asked for it."""
    for pkg, where, key in packages:
        if not _PACKAGE.match(pkg):
            raise RecipeError(
                f"{pkg!r} is not a Debian package name", _FIX_HINT, where=where, key=key
            )


def _check_homes(
    doc: loader.Document, data: dict[str, Any], users: list[User], origins: dict[str, Origin]
) -> None:
    """Home directories (given or implied) stay inside the image's root."""
    for i, u in enumerate(users):
        home_key = (
            ("users", i, "home") if data["users"][i].get("home") is not None else ("users", i)
        )
        origins[f"users:{i}"] = (u.home, doc.where(home_key), loader.dotted(home_key))
        _check_inside(u.home, doc.where(home_key), loader.dotted(home_key))


def _check_version(doc: loader.Document, version: str | None) -> None:
    if version is not None and (reason := names.problem(version)):
        raise doc.error(
            ("version",),
            f"{version!r} is not a valid version: {reason}",
            hint=f"a version is {names.GRAMMAR}",
        )


def _graft(doc: loader.Document, src: KeyPath, dst: KeyPath, offset: int) -> None:
    """Give override entries merged into ``dst`` the lines they were written on."""
    for key, where in list(doc.origin.items()):
        if key[: len(src)] == src and len(key) > len(src):
            first, *rest = key[len(src) :]
            if isinstance(first, int):
                first += offset
            doc.origin[(*dst, first, *rest)] = where


def _named(
    doc: loader.Document, data: dict[str, Any], key: str, spec: Spec
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each entry of the ``users`` or ``groups`` list, checked, with a valid name."""
    for i, raw in enumerate(data[key] or []):
        entry = check(doc, spec, raw, (key, i))
        if not _NAME.match(entry["name"]):
            what = key.removesuffix("s")
            raise doc.error((key, i, "name"), f"{entry['name']!r} is not a valid {what} name")
        yield i, entry


def _users(doc: loader.Document, data: dict[str, Any]) -> list[User]:
    users = []
    for i, u in _named(doc, data, "users", _USER_SPEC):
        for k in ("home", "shell"):
            if u[k] is not None:
                _usable_path(doc, ("users", i, k), u[k])
        users.append(
            User(
                u["name"],
                u["uid"],
                u["gid"] if u["gid"] is not None else u["uid"],
                u["home"] or ("/root" if u["uid"] == 0 else f"/home/{u['name']}"),
                u["shell"],
                tuple(u["groups"]),
            )
        )
    return users


def _groups(doc: loader.Document, data: dict[str, Any]) -> list[Group]:
    return [Group(**g) for _, g in _named(doc, data, "groups", _GROUP_SPEC)]


def _file(doc: loader.Document, fpath: str, spec: Any) -> FileEntry:
    p = ("files", fpath)
    if not str(fpath).startswith("/"):
        raise doc.error(p, "file paths must be absolute")
    if isinstance(spec, str):
        return FileEntry(fpath, spec.encode(), 0o644)
    if not isinstance(spec, dict):
        raise doc.error(p, "must be a string or a mapping with content and mode")
    refuse_numeric_mode(doc, p, spec)
    f = check(
        doc, {"content": Field(str, required=True), "mode": Field(str, default="0644")}, spec, p
    )
    return FileEntry(fpath, f["content"].encode(), octal_mode(doc, p, f["mode"], "0644"))


def _check_paths(doc: loader.Document, data: dict[str, Any]) -> None:
    """Paths in the rootfs: no NUL (no file system takes one), of a sane length."""
    named: list[tuple[KeyPath, str]] = [(("files", k), k) for k in data["files"]]
    named += [(("symlinks", k), k) for k in data["symlinks"]]
    named += [(("symlinks", k), v) for k, v in data["symlinks"].items()]
    for name in ("directories", "remove"):
        named += [((name, i), v) for i, v in enumerate(data[name])]
    for key, value in named:
        _usable_path(doc, key, value)


def _usable_path(doc: loader.Document, key: KeyPath, value: str) -> None:
    if "\0" in value or not value or len(value) > MAX_PATH:
        raise doc.error(
            key,
            f"{value[:60]!r} is not a usable path",
            hint=f"paths are 1 to {MAX_PATH} characters without NUL",
        )


def _overlay(doc: loader.Document, path: Path, boundary: Boundary, name: str | None) -> Path | None:
    if not name:
        return None
    try:
        overlay = boundary.resolve(path.parent, name, "overlay")
    except ValueError as e:
        raise doc.error(("overlay",), str(e), hint=OUTSIDE_HINT) from None
    if not overlay.is_dir():
        raise doc.error(("overlay",), f"overlay directory not found: {overlay}")
    _check_overlay_entries(doc, overlay)
    return overlay


def _check_overlay_entries(doc: loader.Document, overlay: Path) -> None:
    """Only files, directories and symlinks: reading a FIFO or a device would hang or leak."""

    def fail(e: OSError) -> None:
        raise doc.error(("overlay",), f"cannot read the overlay: {e}", hint="check its permissions")

    count = 0
    for dirpath, dirnames, filenames in os.walk(overlay, onerror=fail):
        for name in (*dirnames, *filenames):
            count += 1
            if count > MAX_OVERLAY_ENTRIES:
                raise doc.error(
                    ("overlay",),
                    f"more than {MAX_OVERLAY_ENTRIES} entries in the overlay",
                    hint="ship large trees as a package",
                )
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                rel = os.path.relpath(os.path.join(dirpath, name), overlay)
                raise doc.error(
                    ("overlay",),
                    f"{rel!r} in the overlay is not a file, directory or symlink",
                    hint="an overlay holds only files, directories and symlinks; remove it",
                )


def check_all(project: Path, allow: Sequence[Path] = ()) -> list[str]:
    """Load every recipe and every image for every arch; return what was checked."""
    from distbuild.model.recipe import load_recipe

    checked = []
    names = image_names(project)
    if not names:
        raise RecipeError("no image definitions found", where=str(project / "images"))
    for arch in ARCHES.values():
        recipe = load_recipe(project, arch, allow)
        checked.append(str(recipe.path.relative_to(project)))
        for name in names:
            load_image(project, name, recipe, allow=allow)
            checked.append(f"images/{name}.yaml ({arch.name})")
    return checked
