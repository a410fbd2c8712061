"""The build workflow, run here as GitHub would: its run steps (read from build.yml)
in order, in a fresh clone of this commit, with the environment the workflow gives
them: one lock job, one job per arch building --locked from the lock job's artifact
(SOURCE_DATE_EPOCH exported through GITHUB_ENV), the merge. The merged index is
the one a single ``--arch all`` build of the same locks makes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.ci import (
    REPO,
    Runner,
    git,
    github_context,
    host_env,
    load,
    read_github_env,
    scripts_in_order,
)

pytestmark = [pytest.mark.slow, pytest.mark.network]


def test_build_workflow_steps_make_the_index_of_one_all_build(tmp_path: Path) -> None:
    workflow = load("build.yml")
    for name, job in workflow["jobs"].items():  # set-up (apt, pip) is skipped below
        assert next(s["run"] for s in job["steps"] if "run" in s) == ".ci/setup", name
    commit = git("-C", REPO, "rev-parse", "HEAD")
    runner = Runner(
        workflow,
        tmp_path,
        source=str(REPO),
        commit=commit,
        context={"github": github_context(commit, "refs/heads/main", "build.yml")},
        host_env=host_env(),
        skip=frozenset({".ci/setup"}),
        venv=REPO / ".venv",
    )
    arches = workflow["jobs"]["image"]["strategy"]["matrix"]["arch"]
    assert arches == ["armv7", "arm64", "amd64"]
    image = workflow["env"]["IMAGE"]
    lock_ws = runner.run_job("lock")
    # One --arch all build of the same commit, locks and epoch (the commit's
    # time, which each arch job pins), side by side with the arch jobs: it
    # needs only the lock job's locks, and CI has a second core. The jobs run
    # in the opposite order of the all build's arches, so that an arch's two
    # builds are minutes apart (a clock leaking into the bytes would show).
    epoch = git("-C", lock_ws, "log", "-1", "--format=%ct")
    with all_build(lock_ws, image, epoch, tmp_path / "all") as all_done:
        for arch in reversed(arches):
            ws = runner.run_job("image", {"arch": arch})
            exported = read_github_env(ws.parent / "github_env")
            assert exported["SOURCE_DATE_EPOCH"] == git("-C", ws, "log", "-1", "--format=%ct")
            assert exported["SOURCE_DATE_EPOCH"] == epoch
        merge_ws = runner.run_job("merge")
        all_done()
    expected = scripts_in_order(workflow, [("lock", 1), ("image", 3), ("merge", 1)])
    assert [c.removeprefix("skipped ") for c in runner.log] == expected

    # The locks ship with the build, and the arch jobs built from the lock job's.
    locks = sorted(p.name for p in (runner.artifacts / "locks").iterdir())
    for arch in arches:
        assert f"{image}.{arch}.lock.json" in locks and f"{image}-boot.{arch}.lock.json" in locks
    [merged] = list((merge_ws / "out" / image).iterdir())
    record = json.loads((merged / "build.json").read_text())
    for arch in arches:
        for kind, name in (("lock", image), ("boot-lock", f"{image}-boot")):
            [shipped] = [a for a in record["artifacts"] if a["kind"] == kind and a["arch"] == arch]
            assert (merged / shipped["path"]).read_bytes() == (
                runner.artifacts / "locks" / f"{name}.{arch}.lock.json"
            ).read_bytes()

    one = json.loads((tmp_path / "all" / image / record["version"] / "build.json").read_text())
    assert record["oci"]["index"] == one["oci"]["index"]
    shas = {(a["arch"], a["kind"], a["path"]): a["sha256"] for a in record["artifacts"]}
    assert shas == {(a["arch"], a["kind"], a["path"]): a["sha256"] for a in one["artifacts"]}


@contextmanager
def all_build(lock_ws: Path, image: str, epoch: str, out: Path) -> Iterator[Callable[[], None]]:
    """``distbuild image --arch all --locked`` in the lock job's workspace, as a
    process of its own; the context gives a wait for its success (it is killed
    if the test leaves first)."""
    log = out.parent / "all-build.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/distbuild"), "image", "--arch", "all", "--image", image,
             "--locked", "--out", str(out)],
            cwd=lock_ws, env={**host_env(SOURCE_DATE_EPOCH=epoch), "PYTHONPATH": str(lock_ws)},
            stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip

    def done() -> None:
        rc = proc.wait(timeout=3600)
        assert rc == 0, log.read_text()[-6000:]

    try:
        yield done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
