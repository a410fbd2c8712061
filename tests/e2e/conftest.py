"""The e2e tests' nodes: each follows a channel of its own arch, served by the test.

The update tests serve that channel and a FleetLock server inside a network
namespace they create: qemu's user network shows the guest that namespace's
loopback as 10.0.2.2. Only the nodes built here (``build_node``) bake in these
addresses and the short update intervals; other tests' builds do not.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BuildKey, Builds, NodeChannels, build_key, image_args

GUEST_HOST = "10.0.2.2"
CHANNEL_PORT = 8080
FLEETLOCK_PORT = 8081
UPDATE_SETTINGS = {
    "poll_interval": "3s",
    "poll_jitter": "1s",
    "reboot": "fleetlock",
    "fleetlock_url": f"http://{GUEST_HOST}:{FLEETLOCK_PORT}",
    "fleetlock_group": "e2e",
    "retry_wait": "1s",
    "retry_wait_max": "4s",
    "read_timeout": "20s",
}


def follow_args(channels: NodeChannels, arch: str) -> list[str]:
    """What ``distbuild image`` needs to bake the arch's e2e channel into a node."""
    args = [
        "--channel-url",
        f"http://{GUEST_HOST}:{CHANNEL_PORT}",
        "--channel",
        channels.name(arch),
        "--trust-root",
        str(channels.root_json(arch)),
    ]
    for key, value in UPDATE_SETTINGS.items():
        args += ["--update-setting", f"{key}={value}"]
    return args


# The bad release of the update story (tests/e2e/test_update.py): containerd's
# config does not parse, so containerd exits at once ("failed to load TOML").
GOOD_CONTAINERD = '    version = 2\n    root = "/data/containerd"\n'
BAD_CONTAINERD = "    version = 2\n    root = [not toml\n"


class NodeBuilds:
    """Single-arch node images that follow their arch's e2e channel (each built
    once per session and version, shared by every e2e test)."""

    def __init__(self, builds: Builds, channels: NodeChannels) -> None:
        self.builds = builds
        self.channels = channels

    def key(self, arch: str, version: str) -> BuildKey:
        return build_key("node", arch, version, extra=follow_args(self.channels, arch))

    def __call__(self, arch: str, version: str = "1.0.0") -> Path:
        return self.builds.many(self.key(arch, version))[0]

    def many(self, *wanted: tuple[str, str]) -> list[Path]:
        """The builds of these (arch, version)s, the missing ones side by side."""
        return self.builds.many(*(self.key(arch, version) for arch, version in wanted))

    def bad_containerd(self, arch: str, wait: bool = True) -> Path | None:
        """Node 2.5.0 from a copy of the project whose containerd config is invalid."""
        extra = follow_args(self.channels, arch)  # here: it may create the channel
        future = self.builds.later(("bad-containerd", arch), lambda: self._bad(arch, extra))
        return future.result() if wait else None

    def _bad(self, arch: str, extra: list[str]) -> Path:
        out = self.builds.out_dir(f"bad-containerd-{arch}")
        bad = out / "project"
        # With the locks the good builds resolved (same packages): resolve them first.
        self.builds.resolve(self.builds.project, "node", arch)
        shutil.copytree(self.builds.project, bad)
        definition = bad / "images" / "node.yaml"
        text = definition.read_text()
        assert text.count(GOOD_CONTAINERD) == 1, "images/node.yaml's containerd config moved"
        definition.write_text(text.replace(GOOD_CONTAINERD, BAD_CONTAINERD))
        args = image_args(bad, out / "build", "node", arch, "2.5.0", extra=extra)
        self.builds.process(args, f"build of the bad-containerd node for {arch}", out / "build.log")
        return out / "build" / "node" / "2.5.0"


@pytest.fixture(scope="session")
def build_node(build_image: Builds, node_channels: NodeChannels) -> NodeBuilds:
    return NodeBuilds(build_image, node_channels)


class Stories:
    """Stories that run in the background from the session's start, each on
    a thread of its own, beside the e2e tests that run one guest at a time
    (a TCG guest keeps one core busy; the other was idle once the builds
    were done). A module declares ``background_story(builds, channels,
    workdir)``; its test takes the result from :meth:`result`, which raises
    what the story raised. Those tests run after the other e2e tests
    (``pytest_collection_modifyitems``), so they wait the least."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.futures: dict[str, Future[Any]] = {}
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="story")

    def start(self, name: str, story: Callable[[Path], Any]) -> None:
        if name not in self.futures:
            workdir = self.tmp.mktemp(name.rsplit(".", 1)[-1])
            self.futures[name] = self.pool.submit(story, workdir)

    def result(self, name: str, timeout: float) -> Any:
        """The result of the story ``builds_ahead`` started for module ``name``."""
        return self.futures[name].result(timeout=timeout)

    def settle(self, timeout: float) -> None:
        """Wait until no story runs, ``timeout`` seconds at most (what each
        raised is for its own test): a test with three guests at once keeps
        both cores, and a story starved beside it would run into its own
        deadlines."""
        wait(self.futures.values(), timeout=timeout)

    def close(self) -> None:
        """Wait for what still runs: each story ends by its own deadlines."""
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def background_stories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stories]:
    started = Stories(tmp_path_factory)
    yield started
    started.close()


def has_background_story(module: Any) -> bool:
    return callable(getattr(module, "background_story", None))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of background stories run after the other e2e tests."""
    e2e = [i for i, item in enumerate(items) if "/tests/e2e/" in str(item.path)]
    if not e2e:
        return
    first, last = e2e[0], e2e[-1]
    block = items[first : last + 1]
    late = [item for item in block if has_background_story(getattr(item, "module", None))]
    if late:
        rest = [item for item in block if item not in late]
        items[first : last + 1] = rest + late


@pytest.fixture(scope="session", autouse=True)
def builds_ahead(
    request: pytest.FixtureRequest, build_node: NodeBuilds, background_stories: Stories
) -> None:
    """Start, in the background, the builds the session's e2e modules declare
    (in the order they run): a TCG guest keeps one core busy, and the builds of
    the tests after it use the other, instead of each test's setup waiting for
    its builds alone.

    A module declares ``NODE_BUILDS`` (its (arch, version) node builds),
    ``BAD_CONTAINERD_BUILDS`` (arches), ``IMAGE_BUILDS`` ((image, arch) of
    the session's plain builds, e.g. the toolbox index),
    ``ahead_builds(channels, project)`` (the keys of builds of its own; it may
    first write what they need, such as an image definition, into the
    session's project) and ``background_story`` (see :class:`Stories`).
    """
    modules = dict.fromkeys(
        m for m in (getattr(item, "module", None) for item in request.session.items) if m
    )
    # A background story's builds first: it starts once they are made.
    for module in sorted(modules, key=lambda m: not has_background_story(m)):
        build_node.builds.ahead(
            *(build_node.key(arch, version) for arch, version in getattr(module, "NODE_BUILDS", ()))
        )
        for arch in getattr(module, "BAD_CONTAINERD_BUILDS", ()):
            build_node.bad_containerd(arch, wait=False)
        build_node.builds.ahead(
            *(build_key(image, arch) for image, arch in getattr(module, "IMAGE_BUILDS", ()))
        )
        own = getattr(module, "ahead_builds", None)
        if own is not None:
            build_node.builds.ahead(*own(build_node.channels, build_node.builds.project))
    builds, channels = build_node.builds, build_node.channels
    for module in filter(has_background_story, modules):
        story = module.background_story
        background_stories.start(module.__name__, lambda w, f=story: f(builds, channels, w))
