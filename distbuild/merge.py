"""Merging single-arch builds (CI matrix jobs) into one multi-arch build.

The merged index is built by the same code as an ``--arch all`` build, so
both give the same index digest for the same inputs.
"""

from __future__ import annotations

from pathlib import Path

from distbuild import scratch
from distbuild.build import finish_index
from distbuild.context import BuildDir
from distbuild.core.errors import DistbuildError
from distbuild.core.fsutil import clone_file
from distbuild.oci import layout as oci
from distbuild.record import BuildRecord, load_record
from distbuild.staging import check_directory, check_writable, staged


def merge(inputs: list[Path], out: Path) -> tuple[BuildRecord, Path]:
    if not inputs:
        raise DistbuildError("nothing to merge", hint="name the build directories of the arch jobs")
    loaded = [load_record(p) for p in inputs]
    first = loaded[0][0]
    for rec, d in loaded[1:]:
        if (rec.image, rec.version, rec.source_date_epoch) != (
            first.image,
            first.version,
            first.source_date_epoch,
        ):
            raise DistbuildError(
                f"{d} is {rec.image} {rec.version} (epoch {rec.source_date_epoch}), "
                f"not {first.image} {first.version} (epoch {first.source_date_epoch})",
                hint="merge only builds of one image, version and SOURCE_DATE_EPOCH",
            )
    seen: dict[str, Path] = {}
    for rec, d in loaded:
        for arch in rec.arches:
            if arch in seen:
                raise DistbuildError(
                    f"{arch} is built in both {seen[arch]} and {d}",
                    hint="give each arch's build once",
                )
            seen[arch] = d
    check_writable(out)
    check_directory(out / first.image)
    with scratch.user_errors(out):
        return _merge_into(loaded, out / first.image / first.version)


def _merge_into(loaded: list[tuple[BuildRecord, Path]], final: Path) -> tuple[BuildRecord, Path]:
    first = loaded[0][0]
    with staged(final) as staging:
        record = BuildRecord(first.image, first.version, first.source_date_epoch)
        out = BuildDir.create(staging)
        for rec, d in loaded:
            src_layout = oci.Layout(d / rec.oci["layout"]) if rec.oci else None
            if src_layout is not None:
                _, index = src_layout.image_index(rec.oci.get("ref"))
                for desc in index["manifests"]:
                    oci.copy_image(src_layout, out.layout, desc)
                    out.manifests.append(desc)
            for a in rec.artifacts:
                if a.kind in ("oci", "oci-index"):
                    if a.kind == "oci":
                        record.artifacts.append(a)
                    continue
                dest = staging / a.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                clone_file(d / a.path, dest)
                record.artifacts.append(a)
        if out.manifests:
            finish_index(record, out)
        record.write(staging)
    return record, final
