"""Planning and running a build: recipe + image + locks → artifacts + record.

The plan stage (:func:`prepare`) reads the definitions and resolves every lock
the image's outputs use; then each output in :data:`OUTPUTS` writes into the
staged build, which is swapped into place at the end (:mod:`distbuild.staging`).
Specs (recipe, image) are frozen; what a build accumulates lives in the
:class:`~distbuild.context.ArchBuild` of each arch.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distbuild import scratch
from distbuild.context import ArchBuild, BuildDir, BuildOptions, code_digest
from distbuild.core import names, ui
from distbuild.core.arch import Arch
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.core.names import check_name
from distbuild.core.run import run
from distbuild.disk.outputs import build_disk_output, build_root
from distbuild.disk.trees import BOOT_LOCK, boot_packages
from distbuild.locks import get_locks
from distbuild.model.image import ImageDef, load_image
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.oci import layout as oci
from distbuild.oci.layer import Layer, reuse_layer, store_layer, write_layer
from distbuild.record import Artifact, BuildRecord
from distbuild.rootfs import extensions
from distbuild.rootfs.fetch import DebCache
from distbuild.rootfs.lock import Lock
from distbuild.sbom.spdx import write_sbom
from distbuild.staging import check_directory, check_writable, staged

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_epoch(project: Path) -> int:
    """SOURCE_DATE_EPOCH, else the time of the project's last commit, else 0."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        try:
            return int(env)
        except ValueError:
            raise DistbuildError(
                f"SOURCE_DATE_EPOCH={env!r} is not a number", hint="set it to seconds since 1970"
            ) from None
    if (project / ".git").exists() and shutil.which("git"):
        out = run(
            ["git", "-C", str(project), "log", "-1", "--format=%ct"], capture=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip().isdigit():
            return int(out.stdout.strip())
    return 0


def default_version(epoch: int) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(epoch)) + ".1"


def iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def prepare(opts: BuildOptions, arch: Arch, workdir: Path, code: str | None = None) -> ArchBuild:
    """The plan of one arch: definitions read, every lock resolved, the packages fetched.

    ``code`` is the :func:`~distbuild.context.code_digest` a build computes once for all arches.
    """
    recipe = load_recipe(opts.project, arch, opts.allow_outside)
    image = load_image(opts.project, opts.image, recipe, allow=opts.allow_outside)
    epoch = (
        opts.source_date_epoch
        if opts.source_date_epoch is not None
        else default_epoch(opts.project)
    )
    # The version names OUT/<image>/<version>, which a finished build replaces: check it.
    version = check_name(opts.version or image.version or default_version(epoch), names.VERSION)
    locks = plan_locks(opts, recipe, image)
    lock = locks.pop(image.name)
    DebCache(opts.cache).ensure(list(lock.packages), mirror=opts.mirror)
    extensions.ensure(opts.cache, image)
    code = code or code_digest()
    return ArchBuild(recipe, image, lock, version, epoch, opts, workdir, code, extra_locks=locks)


def plan_locks(opts: BuildOptions, recipe: Recipe, image: ImageDef) -> dict[str, Lock]:
    """Every lock the image and its outputs use for this arch, read or resolved (``--locked``)."""
    return get_locks(opts, recipe, image, lock_requests(recipe, image))


def lock_requests(recipe: Recipe, image: ImageDef) -> dict[str, tuple[str, ...]]:
    """Every lock the image uses for this arch: lock name -> the packages it asks for."""
    wanted = {image.name: tuple(sorted(image.packages))}
    for kind in image.outputs:
        for suffix, packages in OUTPUTS[kind].locks:
            wanted[image.name + suffix] = tuple(sorted(packages(recipe, image)))
    return wanted


def cached_layer(ctx: ArchBuild) -> Layer:
    """The rootfs layer from the layer cache, checked; built (and stored) on a miss."""
    entry = ctx.options.cache / "layers" / ctx.cache_key("layer")
    layer = reuse_layer(entry)
    if layer is not None:
        ui.note(f"{ctx.arch.name}: rootfs layer unchanged, reused from cache")
        return layer
    root = ctx.rootfs()
    ui.note(f"{ctx.arch.name}: writing the rootfs layer")
    built = write_layer(
        root,
        ctx.workdir / f"layer-{ctx.arch.name}.tar.gz",
        ctx.epoch,
        ctx.options.compression_level,
    )
    return store_layer(entry, built)


def build_oci(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    """Add this arch's image to the build's OCI layout (the index follows all arches)."""
    desc = oci_manifest(ctx, out.layout)
    out.manifests.append(desc)
    return [out.artifact(ctx.arch.name, "oci", out.layout.blob_path(desc["digest"]))]


def oci_manifest(ctx: ArchBuild, layout: oci.Layout) -> dict[str, Any]:
    """Add this arch's image to ``layout``; return its manifest descriptor."""
    layer = cached_layer(ctx)
    layout.put_file(layer.path, layer.digest)
    img = ctx.image
    cfg: dict[str, Any] = {"Env": list(img.env) or [DEFAULT_PATH]}
    if img.entrypoint:
        cfg["Entrypoint"] = list(img.entrypoint)
    if img.cmd:
        cfg["Cmd"] = list(img.cmd)
    if img.workdir:
        cfg["WorkingDir"] = img.workdir
    if img.user:
        cfg["User"] = img.user
    labels = {oci.VERSION: ctx.version, oci.TITLE: img.name, **dict(img.labels)}
    cfg["Labels"] = labels
    created = iso(ctx.epoch)
    config = oci.image_config(
        ctx.arch.platform,
        [layer.diff_id],
        created,
        cfg,
        f"distbuild {img.name} {ctx.version} ({len(ctx.lock.packages)} Debian packages)",
    )
    config_desc = layout.put(oci.CONFIG, oci.canonical(config))
    layer_desc = {"mediaType": oci.LAYER_GZIP, "digest": layer.digest, "size": layer.size}
    annotations = {oci.CREATED: created, oci.VERSION: ctx.version, oci.TITLE: img.name}
    manifest = oci.image_manifest(config_desc, [layer_desc], annotations)
    desc = layout.put(oci.MANIFEST, oci.canonical(manifest))
    desc["platform"] = ctx.arch.platform.as_oci()
    return desc


# A lock an output needs beside the image's own: the lock name's suffix, and
# fn(recipe, image) -> the packages to lock (or an error if the image cannot
# have that output, raised at plan, before anything is resolved).
LockRequest = tuple[str, Callable[[Recipe, ImageDef], tuple[str, ...]]]


@dataclass(frozen=True)
class Output:
    build: Callable[[ArchBuild, BuildDir], list[Artifact]]
    locks: tuple[LockRequest, ...] = ()


_BOOT_LOCK: LockRequest = (BOOT_LOCK, boot_packages)

# Every output an image definition may list (model.image.OUTPUTS; a unit test
# keeps the two equal): how it is built, and the locks the plan resolves for it.
OUTPUTS: Mapping[str, Output] = {
    "oci": Output(build_oci),
    "root": Output(build_root, locks=(_BOOT_LOCK,)),
    "disk": Output(build_disk_output, locks=(_BOOT_LOCK,)),
}


def _ship_locks(ctx: ArchBuild, out: BuildDir) -> list[Artifact]:
    """Every lock the build used travels with it, so a release can be rebuilt from it.

    The image's own lock is kind ``lock``; the others (the boot lock) are kind
    ``<suffix>-lock`` (``boot-lock``), named after their suffix.
    """
    shipped = []
    locks = {"packages": ("lock", ctx.lock)}
    for name, lock in sorted(ctx.extra_locks.items()):
        suffix = name.removeprefix(ctx.image.name).lstrip("-")
        locks[suffix] = (f"{suffix}-lock", lock)
    for stem, (kind, lock) in locks.items():
        path = out.path / ctx.arch.name / f"{stem}.lock.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lock.to_json())
        shipped.append(out.artifact(ctx.arch.name, kind, path))
    return shipped


def _sbom(ctx: ArchBuild, out: BuildDir) -> Artifact:
    sbom = write_sbom(
        out.path / ctx.arch.name / "sbom.spdx.json",
        image=ctx.image.name,
        version=ctx.version,
        arch=ctx.arch.name,
        lock=ctx.lock,
        debs=DebCache(ctx.options.cache),
        epoch=ctx.epoch,
        extensions=ctx.image.extensions,
    )
    return out.artifact(ctx.arch.name, "sbom", sbom)


def build(opts: BuildOptions) -> tuple[BuildRecord, Path]:
    """Build every requested arch and write a complete build into ``opts.out``.

    An OSError anywhere (a full disk, a file in the way) becomes an error
    naming the path; the staging and work directories are removed on any
    exit, and those of killed builds by the next build.
    """
    check_writable(opts.out)
    with scratch.user_errors(opts.out, opts.cache):
        return _build(opts)


def _build(opts: BuildOptions) -> tuple[BuildRecord, Path]:
    check_directory(opts.out / opts.image)
    opts.cache.mkdir(parents=True, exist_ok=True)
    scratch.reap(opts.cache, "work-")
    work = scratch.make_dir(opts.cache, "work-")
    try:
        code = code_digest()
        check_boards(opts)
        with scratch.user_errors(opts.out, opts.cache):
            builds = [prepare(opts, arch, work, code) for arch in opts.arches]
        versions = {b.version for b in builds}
        if len(versions) != 1:
            raise DistbuildError(
                f"the arches disagree on the version: {', '.join(sorted(versions))}"
            )
        final = opts.out / opts.image / builds[0].version
        with staged(final) as staging, scratch.user_errors(opts.out, opts.cache):
            record = _build_into(BuildDir.create(staging), builds)
        return record, final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_boards(opts: BuildOptions) -> None:
    """Every board asked for is one of a built arch's (its recipe's ``boards:``), checked
    before any lock is resolved or package fetched."""
    recipes = [load_recipe(opts.project, arch, opts.allow_outside) for arch in opts.arches]
    known = {b.name for recipe in recipes for b in recipe.boards}
    for name in opts.boards:
        if name == "all" or name in known:
            continue
        arches = ", ".join(arch.name for arch in opts.arches)
        raise UsageError(
            f"no arch being built ({arches}) has a board {name!r}",
            hint=f"boards of these arches: {', '.join(sorted(known))}, or all "
            "(a board is listed in its arch's recipe, boards:)",
        )


def _build_into(out: BuildDir, builds: list[ArchBuild]) -> BuildRecord:
    """Write every arch's outputs, locks, SBOM and the record into the staged build."""
    first = builds[0]
    record = BuildRecord(first.options.image, first.version, first.epoch)
    for ctx in builds:
        for kind in ctx.image.outputs:
            record.artifacts.extend(OUTPUTS[kind].build(ctx, out))
        record.artifacts.extend(_ship_locks(ctx, out))
        record.artifacts.append(_sbom(ctx, out))
    if out.manifests:
        finish_index(record, out)
    record.write(out.path)
    return record


def finish_index(record: BuildRecord, out: BuildDir) -> None:
    """Write the OCI index of every arch's image and name it in the record."""
    created = iso(record.source_date_epoch)
    annotations = {oci.CREATED: created, oci.VERSION: record.version, oci.TITLE: record.image}
    desc = oci.write_index(out.layout, out.manifests, annotations, record.version)
    record.oci = {
        "layout": str(out.layout.path.relative_to(out.path)),
        "ref": record.version,
        "index": desc["digest"],
        "index_size": desc["size"],
    }
    record.artifacts = [a for a in record.artifacts if a.kind != "oci-index"]
    record.artifacts.append(out.artifact("all", "oci-index", out.layout.blob_path(desc["digest"])))
