"""The channel page that ``distbuild publish`` and ``promote`` write, as a person sees it
in a real browser (Debian's chromium, headless): screenshot kept under test-artifacts/."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distbuild.channel.repo import ChannelRepo
from distbuild.channel.view import describe
from tests.conftest import REPO, run_cli
from tests.support.channel import make_build

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]


class _Text(HTMLParser):
    """The text a browser shows: no head, style or script."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("head", "style", "script"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "style", "script"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(" ".join(data.split()))


def chromium(page: Path, profile: Path, *args: str) -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    proc = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def seen(page: Path, tmp_path: Path, screenshot: Path) -> str:
    """Screenshot the page and return its visible text after scripts ran."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    chromium(page, tmp_path / "profile", f"--screenshot={screenshot}")
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1200, 900)
    assert len(png) > 20_000  # a rendered page, not a blank canvas
    parser = _Text()
    parser.feed(chromium(page, tmp_path / "profile", "--dump-dom"))
    return " ".join(parser.parts)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, project: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("page")
    keys, repo = base / "keys", base / "repo"
    assert run_cli("keys", "init", "--keys", keys) == 0
    builds = {
        v: make_build(base / "out", "node", v, size=300 + i)
        for i, v in enumerate(("1.0.0", "1.1.0"))
    }
    common = ("--repo", repo, "--keys", keys, "--allow-root-keys")
    for build in builds.values():
        assert run_cli("--project", project, "publish", build, "--channel", "beta", *common) == 0
    assert (
        run_cli("--project", project, "promote", "beta", "stable", "--release", "1.0.0", *common)
        == 0
    )
    return {"repo": repo, **builds}


def _record(build: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((build / "build.json").read_text())


def test_publish_writes_a_page_people_can_read(published: dict[str, Path], tmp_path: Path) -> None:
    page = published["repo"] / "beta" / "index.html"
    assert page.is_file(), "publish did not write the channel page"
    text = seen(page, tmp_path, ARTIFACTS / "channel-page-beta.png")

    assert "distbuild channel beta" in text
    assert "Architectures: armv7, arm64, amd64" in text
    for arch in ("armv7", "arm64", "amd64"):
        assert f"node for {arch}" in text
    # Newest first, and marked as the one nodes get.
    assert "1.1.0 latest" in text
    assert text.index("1.1.0 latest") < text.index("1.0.0")
    for version in ("1.0.0", "1.1.0"):
        record = _record(published[version])
        for a in record["artifacts"]:
            if a["kind"] in ("oci", "oci-index"):
                continue  # registry content, not channel targets
            assert f"{a['sha256'][:16]}…" in text, f"{version} {a['path']} digest not shown"
    assert "300 B" in text and "301 B" in text  # sizes of the two releases' payloads
    for item in describe(ChannelRepo(published["repo"], "beta")).latest:
        assert item.published.replace("T", " ").replace("Z", " UTC") in text  # the date
    # How to subscribe, with absolute URLs computed where the page is opened.
    assert "/etc/distbuild/update.yaml" in text
    assert "channel: beta" in text and "image: node" in text
    assert f"{(published['repo'] / 'beta' / 'metadata').as_uri()}/" in text
    assert f"url: {published['repo'].as_uri()}/" in text


def test_promote_writes_the_destination_page(published: dict[str, Path], tmp_path: Path) -> None:
    page = published["repo"] / "stable" / "index.html"
    text = seen(page, tmp_path, ARTIFACTS / "channel-page-stable.png")
    assert "distbuild channel stable" in text
    assert "1.0.0 latest" in text
    assert "1.1.0" not in text  # never promoted
