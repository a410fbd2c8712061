"""Image definitions (``images/<name>.yaml``) as frozen models, per arch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild.arch import ARCHES, Arch
from distbuild.errors import RecipeError, UsageError
from distbuild.model import loader
from distbuild.model.recipe import Recipe
from distbuild.model.schema import Field, Spec, check

OUTPUTS = ("oci", "root", "disk")

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
    **_BODY,
}

_USER_SPEC: Spec = {
    "name": Field(str, required=True),
    "uid": Field(int, required=True),
    "gid": Field(int),
    "home": Field(str),
    "shell": Field(str, default="/bin/sh"),
    "groups": Field("str-list"),
}
_GROUP_SPEC: Spec = {"name": Field(str, required=True), "gid": Field(int, required=True)}
_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")


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


# Keys whose entries are paths inside the image's root (map keys or list items).
_ROOT_PATHS = ("files", "symlinks", "directories", "remove")


def _entry_origins(
    doc: loader.Document, body: dict[str, Any], prefix: loader.KeyPath, offsets: dict[str, int]
) -> dict[str, tuple[str, str, str]]:
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
    project: Path, name: str, recipe: Recipe, extra: dict[str, Any] | None = None
) -> ImageDef:
    path = project / "images" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(image_names(project)) or "none"
        raise UsageError(f"unknown image {name!r}", hint=f"images in {project / 'images'}: {known}")
    arch = recipe.arch
    context = {"arch": arch, "recipe": recipe, **(extra or {})}
    doc = loader.load(path, context)
    data = check(doc, IMAGE_SPEC)
    if data["name"] != name:
        raise doc.error(("name",), f"says {data['name']!r} but the file is {path.name}")
    for i, out in enumerate(data["outputs"]):
        if out not in OUTPUTS:
            raise doc.error(
                ("outputs", i), f"unknown output {out!r}", hint=f"outputs: {', '.join(OUTPUTS)}"
            )
    origin = [
        (p, doc.where(("packages", i)), f"packages[{i}]") for i, p in enumerate(data["packages"])
    ]
    origins = _entry_origins(doc, data, (), {})
    overrides = data.pop("overrides")
    for key, value in overrides.items():
        if key not in ARCHES:
            raise doc.error(
                ("overrides", key), f"unknown arch {key!r}", hint=f"arches: {', '.join(ARCHES)}"
            )
        body = check(doc, _BODY, value, ("overrides", key))
        if key == arch.name:
            origin += [
                (p, doc.where(("overrides", key, "packages", i)), f"overrides.{key}.packages[{i}]")
                for i, p in enumerate(body["packages"])
            ]
            offsets = {k: len(v) for k, v in data.items() if isinstance(v, list)}
            origins.update(_entry_origins(doc, body, ("overrides", key), offsets))
            for k, v in body.items():
                data[k] = {**data[k], **v} if isinstance(v, dict) else data[k] + v
    packages = list(data["packages"])
    if data["kernel"]:
        packages.append(recipe.kernel_package)
        origin.append((recipe.kernel_package, str(recipe.path), "kernel.package"))
    for i, pkg in enumerate(packages):
        if not re.match(r"^[a-z0-9][a-z0-9+.-]+$", pkg):
            raise doc.error(("packages", i), f"{pkg!r} is not a Debian package name")
    for entry, where, key in origins.values():
        _check_inside(entry, where, key)
    files = []
    for fpath, spec in data["files"].items():
        p = ("files", fpath)
        if not str(fpath).startswith("/"):
            raise doc.error(p, "file paths must be absolute")
        if isinstance(spec, str):
            files.append(FileEntry(fpath, spec.encode(), 0o644))
        elif isinstance(spec, dict):
            f = check(
                doc,
                {"content": Field(str, required=True), "mode": Field(str, default="0644")},
                spec,
                p,
            )
            try:
                mode = int(f["mode"], 8)
            except ValueError:
                raise doc.error((*p, "mode"), f"{f['mode']!r} is not an octal mode") from None
            files.append(FileEntry(fpath, f["content"].encode(), mode))
        else:
            raise doc.error(p, "must be a string or a mapping with content and mode")
    users = []
    for i, u in enumerate(data["users"] or []):
        u = check(doc, _USER_SPEC, u, ("users", i))
        if not _NAME.match(u["name"]):
            raise doc.error(("users", i, "name"), f"{u['name']!r} is not a valid user name")
        if u["home"] is not None:
            home_key = ("users", i, "home")
            origins[f"users:{i}"] = (u["home"], doc.where(home_key), loader.dotted(home_key))
            _check_inside(u["home"], doc.where(home_key), loader.dotted(home_key))
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
    groups = [
        Group(**check(doc, _GROUP_SPEC, g, ("groups", i)))
        for i, g in enumerate(data["groups"] or [])
    ]
    overlay = None
    if data["overlay"]:
        overlay = (path.parent / data["overlay"]).resolve()
        if not overlay.is_dir():
            raise doc.error(("overlay",), f"overlay directory not found: {overlay}")
        origins["overlay"] = (str(overlay), doc.where(("overlay",)), "overlay")
    cfg = data["config"]
    if data["version"] is not None and not re.match(
        r"^[0-9A-Za-z][0-9A-Za-z._+-]*$", data["version"]
    ):
        raise doc.error(("version",), f"{data['version']!r} is not a valid version")
    return ImageDef(
        name=name,
        path=path,
        arch=arch,
        description=data["description"],
        version=data["version"],
        outputs=tuple(data["outputs"]),
        kernel=data["kernel"],
        busybox_links=data["busybox_links"],
        packages=tuple(dict.fromkeys(packages)),
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
        package_origin=tuple(origin),
        entry_origin=tuple((k, where, key) for k, (_, where, key) in origins.items()),
    )


def check_all(project: Path) -> list[str]:
    """Load every recipe and every image for every arch; return what was checked."""
    from distbuild.model.recipe import load_recipe

    checked = []
    names = image_names(project)
    if not names:
        raise RecipeError("no image definitions found", where=str(project / "images"))
    for arch in ARCHES.values():
        recipe = load_recipe(project, arch)
        checked.append(str(recipe.path.relative_to(project)))
        for name in names:
            load_image(project, name, recipe)
            checked.append(f"images/{name}.yaml ({arch.name})")
    return checked
