"""Planning the locks of a build: every lock an image uses, through one function.

The image's own lock and the locks its outputs need (the boot lock of the
``root`` and ``disk`` outputs, registered by them in :data:`EXTRA_LOCKS`) are
read, or resolved and written, here in the plan stage, honouring ``--locked``
and ``--update-lock``; later stages only read what was planned.
"""

from __future__ import annotations

from collections.abc import Callable

from distbuild import scratch
from distbuild.context import BuildOptions
from distbuild.core import ui
from distbuild.core.errors import LockError, MissingPackageError, UsageError
from distbuild.model.image import ImageDef
from distbuild.model.recipe import Recipe
from distbuild.rootfs import apt
from distbuild.rootfs.lock import Lock, lock_path, read_lock, write_lock
from distbuild.rootfs.sources import sources_for

# Locks an output needs beside the image's own: kind -> (lock name suffix,
# fn(recipe, image) -> the packages to lock, or an error if the image cannot
# have that output). The disk outputs register the boot lock.
ExtraLock = tuple[str, Callable[[Recipe, ImageDef], tuple[str, ...]]]
EXTRA_LOCKS: dict[str, ExtraLock] = {}


def lock_requests(recipe: Recipe, image: ImageDef) -> dict[str, tuple[str, ...]]:
    """Every lock the image uses for this arch: lock name -> the packages it asks for."""
    wanted = {image.name: tuple(sorted(image.packages))}
    for kind in image.outputs:
        if kind in EXTRA_LOCKS:
            suffix, packages = EXTRA_LOCKS[kind]
            wanted[image.name + suffix] = tuple(sorted(packages(recipe, image)))
    return wanted


def get_locks(opts: BuildOptions, recipe: Recipe, image: ImageDef) -> dict[str, Lock]:
    """Every lock the image uses for this arch (see :func:`get_lock`), by lock name."""
    return {
        name: get_lock(opts, recipe, image, name, wanted)
        for name, wanted in lock_requests(recipe, image).items()
    }


def get_lock(
    opts: BuildOptions,
    recipe: Recipe,
    image: ImageDef,
    name: str | None = None,
    wanted: tuple[str, ...] | None = None,
) -> Lock:
    """Read one lock (default: the image's own); resolve and write it if missing or stale.

    Like Cargo: a lock that still covers what the image asks for is honoured
    as is; with ``--locked`` anything else is an error rather than a re-resolve,
    and ``--update-lock`` resolves anew.
    """
    name = name or image.name
    wanted = tuple(sorted(image.packages)) if wanted is None else wanted
    path = lock_path(opts.project, name, recipe.arch.name)
    hint = f"run 'distbuild lock --image {image.name} --arch {recipe.arch.name}' to resolve them"
    if opts.locked and opts.update_lock:
        raise UsageError(
            "--locked and --update-lock contradict each other",
            hint="drop --update-lock to build from the locks as they are",
        )
    if path.exists() and not opts.update_lock:
        lock = read_lock(path)
        if sorted(lock.requested) == sorted(wanted) and lock.suite == recipe.suite:
            return lock
        if opts.locked:
            raise LockError(
                f"{path}: the lock is stale: {image.name} now asks for other packages", hint=hint
            )
        ui.note(f"{recipe.arch.name}: {name} asks for other packages than its lock; resolving")
    elif opts.locked:
        raise LockError(f"{path}: no lock file (--locked)", hint=hint)
    lock = resolve(opts, recipe, image, name, wanted)
    with scratch.user_errors(path.parent):
        write_lock(path, lock)
    ui.note(f"{recipe.arch.name}: locked {len(lock.packages)} packages in {path}")
    return lock


def resolve(
    opts: BuildOptions,
    recipe: Recipe,
    image: ImageDef,
    name: str | None = None,
    wanted: tuple[str, ...] | None = None,
) -> Lock:
    """Resolve one lock (default: the image's own) against the mirror."""
    sources = sources_for(recipe.suite, recipe.components, opts.mirror or recipe.mirror)
    try:
        return apt.resolve_lock(
            opts.cache,
            name or image.name,
            recipe.arch.name,
            recipe.debian_arch,
            recipe.suite,
            sources,
            list(image.packages if wanted is None else wanted),
        )
    except MissingPackageError as e:
        where, key = image.origin_of(e.package)
        raise MissingPackageError(e.package, e.debian_arch, where=where, key=key) from None
