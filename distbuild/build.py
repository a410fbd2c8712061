"""Planning and running a build: recipe + image + lock → artifacts + record.

Specs (recipe, image) are frozen; everything a build accumulates lives in an
:class:`ArchBuild`. The output directory only ever shows complete builds: a
build is staged next to it and renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import distbuild
from distbuild import scratch
from distbuild.context import BuildOptions
from distbuild.core import names, ui
from distbuild.core.arch import Arch
from distbuild.core.errors import (
    DistbuildError,
)
from distbuild.core.names import check_name
from distbuild.core.run import run
from distbuild.locks import get_locks
from distbuild.model.image import ImageDef, load_image
from distbuild.model.recipe import Recipe, load_recipe
from distbuild.oci import layout as oci
from distbuild.oci.layer import Layer, reuse_layer, store_layer, write_layer
from distbuild.record import Artifact, BuildRecord
from distbuild.rootfs import customise, extensions, extract
from distbuild.rootfs.fetch import DebCache, sha256_file
from distbuild.rootfs.lock import Lock
from distbuild.sbom.spdx import write_sbom

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ArchBuild:
    """The state of one arch's build."""

    recipe: Recipe
    image: ImageDef
    lock: Lock
    version: str
    epoch: int
    options: BuildOptions
    workdir: Path
    # The other locks the outputs use (the boot lock), by lock name; planned with the image's.
    extra_locks: dict[str, Lock] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    _rootfs: Path | None = None

    @property
    def arch(self) -> Arch:
        return self.recipe.arch

    def release(self) -> dict[str, str]:
        # EPOCH (SOURCE_DATE_EPOCH) is the node's clock floor at boot.
        return {
            "IMAGE": self.image.name,
            "VERSION": self.version,
            "ARCH": self.arch.name,
            "EPOCH": str(self.epoch),
        }

    def rootfs(self) -> Path:
        """The customised root tree, built on first use."""
        if self._rootfs is None:
            root = self.workdir / f"rootfs-{self.arch.name}"
            if root.exists():
                shutil.rmtree(root)
            ui.note(f"{self.arch.name}: unpacking {len(self.lock.packages)} packages")
            extract.populate(root, self.lock, DebCache(self.options.cache), self.arch.debian)
            customise.customise(root, self.image, self.release())
            extensions.install(root, self.image, self.options.cache)
            self._rootfs = root
        return self._rootfs

    def cache_key(self, what: str) -> str:
        """A key over every input of the rootfs, so a cached result is reused only when valid."""
        image = dataclasses.asdict(self.image)
        image.pop("path")
        image["overlay"] = _tree_digest(self.image.overlay) if self.image.overlay else None
        inputs = {
            "what": what,
            "lock": self.lock.to_json(),
            "image": repr(image),
            "epoch": self.epoch,
            "release": self.release(),
            "level": self.options.compression_level,
            "code": _code_digest(),
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            h.update(f"{p.relative_to(root)}\0{mode}\0".encode())
            # Only lstat for a FIFO or device: opening one would block (customise refuses it).
            if stat.S_ISLNK(mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(mode):
                h.update(p.read_bytes())
    return h.hexdigest()


_CODE: list[str] = []


def _code_digest() -> str:
    """The digest of the code that shapes a rootfs or layer: changing it invalidates caches."""
    if not _CODE:
        pkg = Path(distbuild.__file__).parent
        h = hashlib.sha256()
        for f in sorted(
            [*pkg.glob("rootfs/*.py"), *pkg.glob("oci/layer.py"), *pkg.glob("disk/*.py")]
        ):
            h.update(f.name.encode() + f.read_bytes())
        _CODE.append(h.hexdigest())
    return _CODE[0]


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


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe-"):
            pass
    except OSError as e:
        raise DistbuildError(
            f"cannot write to the output directory {out}: {e.strerror}",
            hint="choose another --out or fix its permissions",
        ) from None


def prepare(opts: BuildOptions, arch: Arch, workdir: Path) -> ArchBuild:
    recipe = load_recipe(opts.project, arch, opts.allow_outside)
    image = load_image(opts.project, opts.image, recipe, allow=opts.allow_outside)
    epoch = (
        opts.source_date_epoch
        if opts.source_date_epoch is not None
        else default_epoch(opts.project)
    )
    # The version names OUT/<image>/<version>, which a finished build replaces: check it.
    version = check_name(opts.version or image.version or default_version(epoch), names.VERSION)
    locks = get_locks(opts, recipe, image)
    lock = locks.pop(image.name)
    DebCache(opts.cache).ensure(list(lock.packages), mirror=opts.mirror)
    extensions.ensure(opts.cache, image)
    return ArchBuild(recipe, image, lock, version, epoch, opts, workdir, extra_locks=locks)


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


def build_oci(ctx: ArchBuild, layout: oci.Layout) -> dict[str, Any]:
    """Add this arch's image to the layout; return its manifest descriptor."""
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


# Per-arch output builders beyond OCI: kind -> fn(ctx, staging dir) -> artifacts.
OutputBuilder = Callable[[ArchBuild, Path], list[Artifact]]
OUTPUT_BUILDERS: dict[str, OutputBuilder] = {}


def _ship_locks(ctx: ArchBuild, staging: Path) -> list[Artifact]:
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
        path = staging / ctx.arch.name / f"{stem}.lock.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lock.to_json())
        shipped.append(_artifact(staging, ctx.arch.name, kind, path))
    return shipped


def _artifact(staging: Path, arch: str, kind: str, path: Path) -> Artifact:
    return Artifact(
        arch, kind, str(path.relative_to(staging)), sha256_file(path), path.stat().st_size
    )


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
        with scratch.user_errors(opts.out, opts.cache):
            builds = [prepare(opts, arch, work) for arch in opts.arches]
        versions = {b.version for b in builds}
        if len(versions) != 1:
            raise DistbuildError(
                f"the arches disagree on the version: {', '.join(sorted(versions))}"
            )
        final = opts.out / opts.image / builds[0].version
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch.reap(final.parent, ".partial-")
        recover_swaps(final.parent)
        staging = scratch.make_dir(final.parent, f".{final.name}.partial-")
        try:
            with scratch.user_errors(opts.out, opts.cache):
                record = _build_into(staging, builds)
                _swap_into_place(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return record, final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_directory(path: Path) -> None:
    """Refuse a file (or a dangling link) where the build puts a directory."""
    if (path.is_symlink() and not path.exists()) or (path.exists() and not path.is_dir()):
        raise DistbuildError(
            f"{path} is in the way: it should be a directory of builds, but is a file",
            hint="move it away, or choose another --out",
        )


def _build_into(staging: Path, builds: list[ArchBuild]) -> BuildRecord:
    """Write every arch's outputs, lock, SBOM and the record into ``staging``."""
    first = builds[0]
    record = BuildRecord(first.options.image, first.version, first.epoch)
    layout = oci.Layout(staging / "oci").init()
    manifests = []
    for ctx in builds:
        for kind in ctx.image.outputs:
            if kind == "oci":
                desc = build_oci(ctx, layout)
                manifests.append(desc)
                record.artifacts.append(
                    Artifact(
                        ctx.arch.name,
                        "oci",
                        str(layout.blob_path(desc["digest"]).relative_to(staging)),
                        desc["digest"].split(":")[1],
                        desc["size"],
                    )
                )
            elif kind in OUTPUT_BUILDERS:
                record.artifacts.extend(OUTPUT_BUILDERS[kind](ctx, staging))
            else:
                raise DistbuildError(
                    f"image {ctx.image.name} asks for output {kind!r}, which this distbuild cannot build",
                    hint="remove it from the image's outputs",
                )
        record.artifacts.extend(_ship_locks(ctx, staging))
        sbom = write_sbom(
            staging / ctx.arch.name / "sbom.spdx.json",
            image=ctx.image.name,
            version=ctx.version,
            arch=ctx.arch.name,
            lock=ctx.lock,
            debs=DebCache(ctx.options.cache),
            epoch=ctx.epoch,
            extensions=ctx.image.extensions,
        )
        record.artifacts.append(_artifact(staging, ctx.arch.name, "sbom", sbom))
    if manifests:
        finish_index(record, layout, manifests, staging)
    record.write(staging)
    return record


def finish_index(
    record: BuildRecord, layout: oci.Layout, manifests: list[dict[str, Any]], base: Path
) -> None:
    created = iso(record.source_date_epoch)
    annotations = {oci.CREATED: created, oci.VERSION: record.version, oci.TITLE: record.image}
    desc = oci.write_index(layout, manifests, annotations, record.version)
    record.oci = {
        "layout": str(layout.path.relative_to(base)),
        "ref": record.version,
        "index": desc["digest"],
        "index_size": desc["size"],
    }
    record.artifacts = [a for a in record.artifacts if a.kind != "oci-index"]
    record.artifacts.append(
        Artifact(
            "all",
            "oci-index",
            str(layout.blob_path(desc["digest"]).relative_to(base)),
            desc["digest"].split(":")[1],
            desc["size"],
        )
    )


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` with ``staging`` so readers see the old or the new build.

    SIGTERM/SIGINT wait until both renames are done; a build killed between
    them leaves ``.<version>.old-*``, which :func:`recover_swaps` puts back.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{scratch.owner_tag()}-")
            os.replace(final, old)
            os.replace(staging, final)
        else:
            old = None
            os.replace(staging, final)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def recover_swaps(parent: Path) -> None:
    """Put back a build a killed swap moved aside; remove the ones it replaced."""
    for name in sorted(os.listdir(parent)):
        version = name[1:].split(".old-", 1)[0] if name.startswith(".") else ""
        if (
            ".old-" in name
            and version
            and not (parent / version).exists()
            and not scratch.owner_alive(name, ".old-")
        ):
            os.replace(parent / name, parent / version)
            ui.note(f"restored {parent / version}, moved aside by a build that was killed")
    scratch.reap(parent, ".old-")


# The root and disk outputs register themselves into OUTPUT_BUILDERS; imported
# last because they build on the names above.
import distbuild.disk.outputs  # noqa: E402
