"""Publishing builds into channels, promoting releases between them, retention.

``publish`` turns a build record's files into targets
``<image>/<version>/<arch>/<file>`` of one channel (a board's files into
``<image>/<version>/<arch>/<board>/<file>``, listed under the release's
``boards`` in the index: see distbuild.core.releases); ``promote`` re-signs the
targets of a release of one channel into another, copying (hard-linking) the
files by hash, never rebuilding. Both keep at most ``keep`` releases per
image: older ones are unlisted and their files in *this* channel deleted
(after a grace period, for readers mid-poll).
Each channel has its own files (linked where the filesystem allows), so a
release pruned here stays whole in every channel it was promoted to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from distbuild.channel.history import History
from distbuild.channel.hooks import NewTarget, Pipeline, ReleaseEvent, TargetSource
from distbuild.channel.keys import KeyStore
from distbuild.channel.model import Channel
from distbuild.channel.pipeline import release_pipeline
from distbuild.channel.repo import ChannelRepo, Update, init_channel, sha256_of
from distbuild.channel.trust import ONLINE_SIGNING
from distbuild.channel.tufapi import TargetFile
from distbuild.core import names
from distbuild.core.errors import DistbuildError, UsageError
from distbuild.core.names import check_name
from distbuild.core.releases import (
    INDEX_KIND,
    INDEX_TARGET,
    WINDOW,
    IndexNameError,
    Release,
    ReleaseIndex,
    target_path,
    version_key,
)
from distbuild.record import BuildRecord, load_record


@dataclass(frozen=True)
class Outcome:
    """What a publish or promote did to a channel."""

    channel: str
    image: str
    version: str
    targets: tuple[str, ...]
    pruned: tuple[str, ...]  # versions dropped by retention
    unchanged: bool = False  # the same release was there already


def collect_targets(
    record: BuildRecord, directory: Path, sources: Sequence[TargetSource]
) -> list[NewTarget]:
    """Run the target sources over a build; check names are unique and files exist."""
    found: dict[str, NewTarget] = {}
    for source in sources:
        for t in source(record, directory):
            if t.path in found:
                raise DistbuildError(
                    f"two files of {record.image} {record.version} would be target {t.path}",
                    hint="give artifacts of one arch distinct file names",
                )
            if not t.source.is_file():
                raise DistbuildError(
                    f"{t.source} is listed in {directory / 'build.json'} but missing",
                    hint="rebuild, or copy the complete build directory",
                )
            found[t.path] = t
    if not found:
        raise DistbuildError(
            f"build {record.image} {record.version} has no files to publish",
            hint="only OCI content was built; it goes to a registry, not a channel",
        )
    return sorted(found.values(), key=lambda t: t.path)


def publish(
    repo_root: Path,
    channel: Channel,
    build: Path,
    keys: KeyStore,
    *,
    now: datetime | None = None,
    pipeline: Pipeline | None = None,
) -> Outcome:
    """Publish a build directory into a channel, creating the channel if needed.

    ``pipeline`` says what of the build becomes targets and what runs after
    the commit; default: :func:`release_pipeline` of the channel, which is
    what ``distbuild publish`` runs.
    """
    pipeline = pipeline if pipeline is not None else release_pipeline(channel)
    keys.require_online("publish")
    record, directory = load_record(build)
    new = collect_targets(record, directory, pipeline.sources)
    for role in ("targets", "snapshot", "timestamp"):
        keys.signers(role)  # unlock now: a missing key must not leave a half-publish
    repo = ChannelRepo(repo_root, channel.name)
    targets = []
    for t in new:
        info = TargetFile(t.length, {"sha256": t.sha256}, t.path)
        info.unrecognized_fields["custom"] = t.custom
        targets.append((info, t.source))
    with (
        repo.lock(),
        _created_if_missing(repo, channel, keys, now),
        Update(repo, keys, channel.expiry, now) as update,
    ):
        update.check_keys(ONLINE_SIGNING, str(keys.path))
        outcome = _land(update, channel, record.image, record.version, targets, link=False)
    if not outcome.unchanged:
        pipeline.after_release(
            ReleaseEvent(
                "publish",
                repo_root,
                channel,
                record.image,
                record.version,
                outcome.targets,
                record,
                directory,
            )
        )
    return outcome


def promote(
    repo_root: Path,
    source: Channel,
    dest: Channel,
    version: str,
    keys: KeyStore,
    *,
    image: str | None = None,
    now: datetime | None = None,
    pipeline: Pipeline | None = None,
) -> Outcome:
    """Re-sign the targets of ``version`` of ``source`` into ``dest``; files are linked.

    After the commit, the steps of ``pipeline`` run (default: those of
    :func:`release_pipeline` of ``dest``, as ``distbuild promote`` runs them).
    """
    pipeline = pipeline if pipeline is not None else release_pipeline(dest)
    if source.name == dest.name:
        raise UsageError("cannot promote a channel into itself", hint="name two channels")
    keys.require_online("promote")
    for role in ("targets", "snapshot", "timestamp"):
        keys.signers(role)
    src_repo = ChannelRepo(repo_root, source.name)
    src_repo.require()
    dst_repo = ChannelRepo(repo_root, dest.name)
    # Check before locking (which creates the destination's directory).
    history = History(src_repo.path)
    index = read_index(Update(src_repo, keys, source.expiry, now))
    _find(index, history, source.name, version, image)
    with ExitStack() as stack:
        # Lock both, in name order, so two promotes in opposite directions cannot deadlock.
        for r in sorted((src_repo, dst_repo), key=lambda r: r.name):
            stack.enter_context(r.lock())
        reader = Update(src_repo, keys, source.expiry, now)
        release = _find(read_index(reader), history, source.name, version, image)
        targets = []
        for path in release.target_paths():
            info = reader.get(path)
            if info is None:
                raise DistbuildError(f"channel {source.name} lists {path} but has no target for it")
            targets.append((info, src_repo.target_file(path, sha256_of(info))))
        stack.enter_context(_created_if_missing(dst_repo, dest, keys, now))
        with Update(dst_repo, keys, dest.expiry, now) as update:
            update.check_keys(ONLINE_SIGNING, str(keys.path))
            outcome = _land(update, dest, release.image, version, targets, link=True)
    if not outcome.unchanged:
        pipeline.after_release(
            ReleaseEvent(
                "promote",
                repo_root,
                dest,
                release.image,
                version,
                outcome.targets,
                source_channel=source.name,
            )
        )
    return outcome


@contextmanager
def _created_if_missing(
    repo: ChannelRepo, channel: Channel, keys: KeyStore, now: datetime | None
) -> Iterator[None]:
    """Create the channel if it does not exist; remove it again if the block fails."""
    created = not repo.exists()
    if created:
        if not all(keys.signer_for(k) for k in keys.roles["root"].keyids):
            raise DistbuildError(
                f"channel {channel.name} does not exist yet, and creating it needs the root "
                f"keys, which {keys.path} does not hold",
                hint=f"create it once with the root keys: distbuild channel init {channel.name} "
                "--keys FULL_KEY_DIR; then publish with the online keys",
            )
        init_channel(repo, keys, channel.expiry, now)
    try:
        yield
    except BaseException:
        if created:
            repo.discard()
        raise


def read_index(update: Update) -> ReleaseIndex:
    """The channel's release index as the current metadata lists it."""
    info = update.get(INDEX_TARGET)
    if info is None:
        return ReleaseIndex(update.repo.name)
    data = update.repo.target_file(INDEX_TARGET, sha256_of(info)).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256_of(info):
        raise DistbuildError(
            f"channel {update.repo.name}: {INDEX_TARGET} does not match its metadata",
            hint="the repository is damaged; restore it from a backup",
        )
    return ReleaseIndex.from_json(data)


def _find(
    index: ReleaseIndex, history: History, channel: str, version: str, image: str | None
) -> Release:
    matches = [
        r for r in index.releases if r.version == version and (image is None or r.image == image)
    ] or history.find(image, version)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(
            f"channel {channel} has {version} of several images",
            hint="name one with --image: " + ", ".join(r.image for r in matches),
        )
    have = [f"{r.image} {r.version}" for r in index.releases if image is None or r.image == image]
    raise UsageError(
        f"channel {channel} has no release {version}" + (f" of {image}" if image else ""),
        hint=("it has: " + ", ".join(have[:8])) if have else "the channel holds no releases yet",
    )


def _land(
    update: Update,
    channel: Channel,
    image: str,
    version: str,
    targets: Sequence[tuple[TargetFile, Path]],
    *,
    link: bool,
) -> Outcome:
    """Add one release's targets, update the index, apply retention, commit."""
    paths = tuple(t.path for t, _ in targets)
    index = read_index(update)
    if _already_landed(update, index, channel.name, image, version, targets):
        return Outcome(channel.name, image, version, paths, (), unchanged=True)
    history = History(update.repo.path)
    _check_not_dropped_at_once(index, history, channel, image, version)
    files: dict[str, dict[str, str]] = {}
    boards: dict[str, dict[str, dict[str, str]]] = {}
    # Every target's names are checked before the first file is stored.
    for arch, board, name, kind in [_listing(info, image, version) for info, _ in targets]:
        if board is None:
            files.setdefault(arch, {})[name] = kind
        else:
            boards.setdefault(arch, {}).setdefault(board, {})[name] = kind
    for info, source in targets:
        update.add(info, source, link=link)
    stamp = int(update.now.timestamp())
    release = Release(image, version, stamp, channel.waves, files, boards)
    index, overflow, pruned = _retain(update, index.with_release(release), history, channel, image)
    _write_index(update, index)
    update.commit()
    # After the commit: a crash here leaves a release unlisted and unpruned, never lost.
    history.push(overflow)
    history.drop(pruned)
    return Outcome(channel.name, image, version, paths, tuple(r.version for r in pruned))


def _listing(info: TargetFile, image: str, version: str) -> tuple[str, str | None, str, str]:
    """``(arch, board, file, kind)`` of a target, as the release index lists it.

    The custom metadata (from a build record, or from another channel's
    metadata on promote) must name this release, and the target's name must be
    exactly the one those names make: a board or file name outside the grammar
    is refused, and no target is listed under a name it was not signed as.
    """
    custom = info.custom
    arch, board, kind = custom.get("arch"), custom.get("board"), custom.get("kind")
    name = info.path.rpartition("/")[2]
    check_name(kind, names.KIND, error=IndexNameError, where=info.path)
    want = target_path(image, version, str(arch), name, None if board is None else str(board))
    if want != info.path or custom.get("image") != image or custom.get("version") != version:
        raise DistbuildError(
            f"target {info.path} is signed as {custom.get('image')} {custom.get('version')} "
            f"{arch}" + (f" board {board}" if board is not None else "") + f", not {want}",
            hint="the source channel's metadata is inconsistent; republish the build",
        )
    return str(arch), None if board is None else str(board), name, str(kind)


def _already_landed(
    update: Update,
    index: ReleaseIndex,
    channel: str,
    image: str,
    version: str,
    targets: Sequence[tuple[TargetFile, Path]],
) -> bool:
    """True if the channel has this very release; an error if it has other content for it."""
    present = [update.get(info.path) for info, _ in targets]
    if not any(present) and index.find(image, version) is None:
        return False
    if all(
        have is not None and sha256_of(have) == sha256_of(want)
        for have, (want, _) in zip(present, targets, strict=True)
    ):
        return True
    raise DistbuildError(
        f"channel {channel} already has {image} {version} with other content",
        hint="a release is immutable: build again with a new --version",
    )


def _check_not_dropped_at_once(
    index: ReleaseIndex, history: History, channel: Channel, image: str, version: str
) -> None:
    """Refuse a version older than every release the channel keeps: retention would drop it."""
    if not channel.keep or index.total(image) < channel.keep:
        return
    listed = index.of(image)
    oldest = listed[channel.keep - 1 :] or history.oldest(image) or listed[-1:]
    if oldest and version_key(version) < version_key(oldest[0].version):
        raise DistbuildError(
            f"{image} {version} is older than the {channel.keep} releases "
            f"channel {channel.name} keeps; it would be dropped at once",
            hint=f"raise keep in channels/{channel.name}.yaml, or publish a newer version",
        )


def _retain(
    update: Update, index: ReleaseIndex, history: History, channel: Channel, image: str
) -> tuple[ReleaseIndex, list[Release], list[Release]]:
    """Apply the window and ``keep``: the new index, releases for the history, pruned ones."""
    # The index lists the newest WINDOW; older releases move to the history.
    overflow = index.of(image)[WINDOW:]
    index = index.without(overflow, held=True)
    pruned: list[Release] = []
    excess = index.total(image) - channel.keep if channel.keep else 0
    if excess > 0:
        # Beyond keep: dropped, oldest first, and their targets removed from this channel.
        listed = index.of(image)
        pruned = history.oldest(image, excess)
        pruned += overflow[::-1][: excess - len(pruned)]
        pruned += listed[::-1][: excess - len(pruned)]
        overflow = [r for r in overflow if r not in pruned]
        for old in pruned:
            for path in old.target_paths():
                update.remove(path)
        index = index.without(pruned)
    return index, overflow, pruned


def _write_index(update: Update, index: ReleaseIndex) -> None:
    """Add the new release index as a target; the file of the one it replaces retires."""
    previous = update.get(INDEX_TARGET)
    current = update.add_bytes(INDEX_TARGET, index.to_json(), {"kind": INDEX_KIND})
    if previous is not None and sha256_of(previous) != sha256_of(current):
        update.retire(update.repo.target_file(INDEX_TARGET, sha256_of(previous)))
