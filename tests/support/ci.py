"""Run a GitHub workflow's jobs here, step by step, as a runner would.

The workflow YAML is the list of steps (never a copy of it): ``run:`` steps must
each be one ``.ci/`` script call and run with bash like GitHub's (``-eo pipefail``),
in a fresh clone, with the environment GitHub gives them: CI, GITHUB_* and
RUNNER_TEMP, the workflow's, job's and step's ``env:`` (``${{ }}`` expressions
filled from the context given), and every ``NAME=VALUE`` an earlier step appended
to ``$GITHUB_ENV``. The plumbing actions are emulated with local parts:
``actions/checkout`` clones (a ``ref:`` from the repository given for it),
``actions/upload-artifact`` / ``download-artifact`` copy directories.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
# One script of .ci/, its arguments plain words or quoted "$VARIABLES".
SCRIPT_CALL = re.compile(r'^\.ci/[a-z][a-z0-9-]*( ([a-z0-9.-]+|"\$[A-Z_]+"))*$')
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEP_TIMEOUT = 3600


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    return data


def run_steps(workflow: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every ``run:`` step as (job, step name, command), in order."""
    out = []
    for job_name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "run" in step:
                out.append((job_name, step.get("name", ""), step["run"]))
    return out


def script_of(command: str) -> str:
    """The ``.ci/`` script a run step calls (the step must be exactly one call)."""
    command = command.strip()
    assert SCRIPT_CALL.match(command), f"not one .ci script call: {command!r}"
    return command.split()[0]


def job_order(workflow: Mapping[str, Any]) -> list[str]:
    """The jobs in an order that honours ``needs``."""
    jobs = workflow["jobs"]
    done: list[str] = []
    while len(done) < len(jobs):
        ready = [
            name
            for name, job in jobs.items()
            if name not in done and all(n in done for n in _needs(job))
        ]
        assert ready, "the jobs' needs form a cycle"
        done.append(ready[0])
    return done


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def evaluate(text: str, context: Mapping[str, Any]) -> str:
    """Fill ``${{ a.b }}`` and ``${{ a.b || 'x' }}`` from ``context`` (missing: '')."""

    def one(expr: str) -> str:
        for alternative in expr.split("||"):
            alternative = alternative.strip()
            if alternative.startswith("'") and alternative.endswith("'"):
                return alternative[1:-1]
            value: Any = context
            for part in alternative.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value not in (None, ""):
                return str(value)
        return ""

    return EXPRESSION.sub(lambda m: one(m.group(1)), text)


def read_github_env(path: Path) -> dict[str, str]:
    """``NAME=VALUE`` lines (and ``NAME<<EOF`` blocks) as GitHub reads them."""
    out: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            out[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        name, sep, value = line.partition("=")
        assert sep, f"GITHUB_ENV line without '=': {line!r}"
        out[name] = value
        i += 1
    return out


@dataclass
class Runner:
    """One emulated GitHub run of a workflow on this machine."""

    workflow: Mapping[str, Any]
    base: Path  # scratch directory of the run
    source: str  # what actions/checkout clones (a path or file:// URL)
    commit: str
    context: dict[str, Any]  # github, inputs, secrets, vars (runner and matrix are added)
    refs: dict[str, str] = field(default_factory=dict)  # checkout ref: -> repository
    env: dict[str, str] = field(default_factory=dict)  # overrides of workflow env
    host_env: dict[str, str] = field(default_factory=dict)  # PATH, HOME, ...
    skip: frozenset[str] = frozenset()  # scripts not run (set-up), asserted present
    extra_args: Mapping[str, list[str]] = field(default_factory=dict)
    venv: Path | None = None  # linked as .venv into each workspace (.ci/setup skipped)
    log: list[str] = field(default_factory=list)  # every script call made, in order

    @property
    def artifacts(self) -> Path:
        return self.base / "artifacts"

    def run_job(self, name: str, matrix: Mapping[str, str] | None = None) -> Path:
        """Run one job (one matrix combination) in a fresh workspace; return it."""
        job = self.workflow["jobs"][name]
        label = name + "".join(f"-{v}" for v in (matrix or {}).values())
        workspace = self.base / "jobs" / label / "ws"
        temp = self.base / "jobs" / label / "tmp"
        temp.mkdir(parents=True)
        github_env = self.base / "jobs" / label / "github_env"
        github_env.touch()
        context = {**self.context, "matrix": dict(matrix or {}), "runner": {"temp": str(temp)}}
        env = {
            **self.host_env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_ENV": str(github_env),
            "RUNNER_TEMP": str(temp),
            # With the venv linked, its distbuild must be this clone's package.
            **({"PYTHONPATH": str(workspace)} if self.venv else {}),
            **{f"GITHUB_{k.upper()}": str(v) for k, v in context["github"].items()},
        }
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            env.update({k: evaluate(str(v), context) for k, v in scope.items()})
        env.update(self.env)
        for step in job["steps"]:
            if "uses" in step:
                self._action(step, workspace, context)
            else:
                step_env = {k: evaluate(str(v), context) for k, v in step.get("env", {}).items()}
                self._run(
                    step["run"], workspace, {**env, **read_github_env(github_env), **step_env}
                )
        return workspace

    def _action(self, step: Mapping[str, Any], workspace: Path, context: Mapping[str, Any]) -> None:
        action = step["uses"].split("@")[0]
        given = {k: evaluate(str(v), context) for k, v in step.get("with", {}).items()}
        if action == "actions/checkout":
            self._checkout(workspace, given)
        elif action == "actions/upload-artifact":
            store = self.artifacts / given["name"]
            assert not store.exists(), f"artifact {given['name']} uploaded twice"
            shutil.copytree(workspace / given["path"], store, symlinks=True)
        elif action == "actions/download-artifact":
            dest = workspace / given["path"]
            if "name" in given:
                shutil.copytree(self.artifacts / given["name"], dest, dirs_exist_ok=True)
            else:
                found = sorted(
                    p for p in self.artifacts.iterdir() if fnmatch.fnmatch(p.name, given["pattern"])
                )
                assert found, f"no artifact matches {given['pattern']}"
                for art in found:
                    shutil.copytree(art, dest / art.name, symlinks=True)
        else:
            raise AssertionError(f"no emulation of {action}")

    def _checkout(self, workspace: Path, given: Mapping[str, str]) -> None:
        dest = workspace / given.get("path", ".")
        if "ref" in given:
            git(
                "clone",
                "-q",
                "--depth",
                "1",
                "--branch",
                given["ref"],
                self.refs[given["ref"]],
                dest,
            )
            return
        git("clone", "-q", "--no-checkout", self.source, dest)
        git("-C", dest, "checkout", "-q", self.commit)
        if self.venv is not None:
            (dest / ".venv").symlink_to(self.venv)

    def _run(self, command: str, workspace: Path, env: dict[str, str]) -> None:
        script = script_of(command)
        if script in self.skip:
            self.log.append(f"skipped {command}")
            return
        command = " ".join([command, *map(shlex.quote, self.extra_args.get(script, []))])
        self.log.append(command)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command],
            cwd=workspace, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT,
        )  # fmt: skip
        assert proc.returncode == 0, (
            f"{command} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )


def git(*args: str | os.PathLike[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout.strip()


def host_env(**extra: str) -> dict[str, str]:
    """The host environment a runner has: no OIDC credential, no caller's settings."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "DISTBUILD_CACHE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return {**env, **extra}


def online_keys(all_keys: Path, dest: Path) -> Path:
    """The online half of a key directory, as the TUF_KEYS secret must hold it."""
    proc = subprocess.run(
        [str(REPO / ".venv/bin/distbuild"), "keys", "export-online",
         "--keys", str(all_keys), "--out", str(dest)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dest


def secret_of(keys: Path) -> str:
    """A key directory as the TUF_KEYS secret: tar.gz of its content, base64."""
    import base64
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(keys.iterdir()):
            tar.add(path, arcname=path.name)
    return base64.b64encode(buf.getvalue()).decode()


def github_context(commit: str, ref: str, workflow: str) -> dict[str, str]:
    """The ``github`` context (and so GITHUB_*) of a push of ``ref`` at ``commit``."""
    kind = "tag" if ref.startswith("refs/tags/") else "branch"
    return {
        "sha": commit,
        "ref": ref,
        "ref_name": ref.split("/", 2)[2],
        "ref_type": kind,
        "event_name": "push",
        "server_url": "https://github.com",
        "repository": "distbuild/distbuild",
        "workflow_ref": f"distbuild/distbuild/.github/workflows/{workflow}@{ref}",
    }


def scripts_in_order(workflow: Mapping[str, Any], jobs: list[tuple[str, int]]) -> list[str]:
    """The run steps the runner must have called: each job's, times its runs."""
    out = []
    for job, times in jobs:
        out += [cmd.strip() for j, _, cmd in run_steps(workflow) if j == job] * times
    return out
