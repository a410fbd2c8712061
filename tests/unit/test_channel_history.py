"""The publisher-side history of releases held beyond the release index."""

from __future__ import annotations

from pathlib import Path

from distbuild.channel.history import HISTORY, History
from distbuild.core.releases import Release


def rel(version: str, image: str = "node") -> Release:
    return Release(image, version, 1000, (), {"amd64": {"root.img": "root"}})


def test_appends_drops_oldest_and_sorts_late_versions_in(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.push([rel("1.1"), rel("1.0")])
    history.push([rel("1.2"), rel("0.9", "toolbox")])
    assert [r.version for r in history.oldest("node", 5)] == ["1.0", "1.1", "1.2"]
    history.push([rel("0.5")])  # an old version published late
    assert [r.version for r in history.oldest("node", 2)] == ["0.5", "1.0"]
    history.drop(history.oldest("node", 2))
    assert [r.version for r in history.oldest("node", 5)] == ["1.1", "1.2"]
    assert [r.image for r in history.find(None, "0.9")] == ["toolbox"]
    history.push([rel("1.2")])  # pushed again after a crash: not duplicated
    assert len(history.oldest("node", 5)) == 2


def test_a_torn_last_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.push([rel("1.0")])
    with open(tmp_path / HISTORY, "a") as f:
        f.write('{"image": "node", "vers')  # the crash
    assert [r.version for r in history.oldest("node", 5)] == ["1.0"]
    history.push([rel("1.1")])
    assert [r.version for r in history.oldest("node", 5)] == ["1.0", "1.1"]
    assert (tmp_path / HISTORY).read_text().count("\n") == 2
