"""Planning the locks of a build: every lock an image uses, through one function.

The plan stage (:func:`distbuild.build.plan_locks`) asks for the image's own
lock and the locks its outputs need (the boot lock of the ``root`` and
``disk`` outputs); each is read, or resolved and written, by :func:`get_lock`,
honouring ``--locked`` and ``--update-lock``. Later stages only read what was
planned (:meth:`distbuild.context.ArchBuild.planned_lock`).
"""

from __future__ import annotations

from collections.abc import Mapping

from distbuild import scratch
from distbuild.context import BuildOptions
from distbuild.core import ui
from distbuild.core.errors import LockError, MissingPackageError, UsageError
from distbuild.model.image import ImageDef
from distbuild.model.recipe import Recipe
from distbuild.rootfs import apt
from distbuild.rootfs.lock import Lock, lock_path, read_lock, write_lock
from distbuild.rootfs.sources import sources_for


def get_locks(
    opts: BuildOptions, recipe: Recipe, image: ImageDef, wanted: Mapping[str, tuple[str, ...]]
) -> dict[str, Lock]:
    """The locks ``wanted`` (lock name -> the packages it asks for), by :func:`get_lock`."""
    return {
        name: get_lock(opts, recipe, image, name, packages) for name, packages in wanted.items()
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
    lock = _resolve(opts, recipe, image, name, wanted)
    with scratch.user_errors(path.parent):
        write_lock(path, lock)
    ui.note(f"{recipe.arch.name}: locked {len(lock.packages)} packages in {path}")
    return lock


def _resolve(
    opts: BuildOptions, recipe: Recipe, image: ImageDef, name: str, wanted: tuple[str, ...]
) -> Lock:
    """Resolve the lock ``name`` of ``image``, for the packages ``wanted``, against the mirror."""
    sources = sources_for(recipe.suite, recipe.components, opts.mirror or recipe.mirror)
    try:
        return apt.resolve_lock(
            opts.cache,
            name,
            recipe.arch.name,
            recipe.debian_arch,
            recipe.suite,
            sources,
            list(wanted),
        )
    except MissingPackageError as e:
        where, key = image.origin_of(e.package)
        raise MissingPackageError(e.package, e.debian_arch, where=where, key=key) from None
