"""The static server: files, single ranges (resumed downloads), no listings, byte counts."""

from __future__ import annotations

from pathlib import Path

import requests

from distbuild.channel.serve import serving


def test_ranges_listings_and_traffic(tmp_path: Path) -> None:
    (tmp_path / "c/targets").mkdir(parents=True)
    (tmp_path / "c/targets/f.img").write_bytes(bytes(range(256)) * 4)
    with serving(tmp_path) as server:
        url = f"{server.url}/c/targets/f.img"
        whole = requests.get(url, timeout=10)
        assert whole.status_code == 200 and len(whole.content) == 1024
        part = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
        assert part.status_code == 206 and part.content == whole.content[1000:]
        assert part.headers["Content-Range"] == "bytes 1000-1023/1024"
        mid = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
        assert mid.content == whole.content[10:20]
        past = requests.get(url, headers={"Range": "bytes=2000-"}, timeout=10)
        assert past.status_code == 416
        assert requests.get(f"{server.url}/c/targets/", timeout=10).status_code == 404
        sent = {t.path: t for t in server.traffic.requests}
    assert sent["/c/targets/f.img"].sent > 0
    assert sent["/c/targets/"].status == 404
