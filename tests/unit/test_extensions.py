"""``extensions:``: files fetched by URL, pinned per arch by sha256 (real loopback servers)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from distbuild.core.arch import ARCHES
from distbuild.core.errors import FetchError, RecipeError
from distbuild.model.image import ImageDef, load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs import extensions
from distbuild.rootfs.fetch import NetworkCounter
from tests.support.stall import Stall, raw_trickle, stalling_server, within

REPO = Path(__file__).resolve().parents[2]
BODY = b"#!/bin/sh\necho kubelet stand-in\n"
SHA = hashlib.sha256(BODY).hexdigest()
OTHER = "ab" * 32


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    dest = tmp_path / "proj"
    for sub in ("recipes", "images"):
        shutil.copytree(REPO / sub, dest / sub, ignore=shutil.ignore_patterns("*.lock.json"))
    return dest


def definition(
    url: str, sha: str = SHA, mode: str = '"0755"', path: str = "/usr/local/bin/kb"
) -> str:
    return f"""\
name: ext
packages: [busybox]
extensions:
  {path}:
    mode: {mode}
    fetch:
      url: {url}
      sha256: {{armv7: "{OTHER}", arm64: "{OTHER}", amd64: "{sha}"}}
"""


def load(proj: Path, text: str, arch: str = "amd64") -> ImageDef:
    (proj / "images/ext.yaml").write_text(text)
    return load_image(proj, "ext", load_recipe(proj, ARCHES[arch]))


def refused(proj: Path, text: str, arch: str = "amd64") -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load(proj, text, arch)
    assert info.value.hint, info.value
    assert "ext.yaml:" in str(info.value)
    return info.value


def test_an_entry_is_resolved_for_the_arch_being_built(proj: Path) -> None:
    url = (
        "https://example.invalid/v1/{{ arch.debian | replace('armhf', 'arm') }}/kb-{{ arch.uname }}"
    )
    amd64 = load(proj, definition(url, SHA.upper())).extensions
    assert len(amd64) == 1
    ext = amd64[0]
    assert (ext.path, ext.mode, ext.sha256) == ("/usr/local/bin/kb", 0o755, SHA)
    assert ext.url == "https://example.invalid/v1/amd64/kb-x86_64"
    assert ext.key == "extensions./usr/local/bin/kb" and "ext.yaml:" in ext.where
    armv7 = load(proj, definition(url), "armv7").extensions[0]
    assert (armv7.url, armv7.sha256) == ("https://example.invalid/v1/arm/kb-armv7l", OTHER)


def test_url_may_be_a_mapping_by_arch(proj: Path) -> None:
    text = definition("{armv7: http://h/k3s-armhf, arm64: http://h/k3s-arm64, amd64: http://h/k3s}")
    assert load(proj, text).extensions[0].url == "http://h/k3s"
    assert load(proj, text, "arm64").extensions[0].url == "http://h/k3s-arm64"


def test_the_arch_being_built_must_have_a_hash(proj: Path) -> None:
    text = definition("http://h/kb").replace(f'armv7: "{OTHER}", ', "")
    assert load(proj, text).extensions  # amd64 is pinned
    e = refused(proj, text, "armv7")
    assert "no sha256 for armv7, the arch being built" in e.message
    assert "armv7: null" in (e.hint or "") and "fetch.sha256" in e.message


def test_a_null_pin_leaves_the_file_out_of_that_arch(proj: Path) -> None:
    text = definition("{arm64: http://h/kb-arm64, amd64: http://h/kb}")
    text = text.replace(f'armv7: "{OTHER}"', "armv7: null")
    assert load(proj, text, "armv7").extensions == ()
    assert load(proj, text, "amd64").extensions[0].url == "http://h/kb"


def test_paths_of_any_yaml_type_are_refused_not_a_crash(proj: Path) -> None:
    text = definition("http://h/kb").replace("  /usr/local/bin/kb:", "  1:", 1)
    text += '  /usr/bin/b:\n    fetch: {url: "http://h/b", sha256: {amd64: "' + SHA + '"}}\n'
    assert "not an absolute file path" in refused(proj, text).message


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file:///etc/shadow", "not an http(s) URL"),
        ("ftp://h/kb", "not an http(s) URL"),
        ('"http:///kb"', "not an http(s) URL"),
        ('"http://h:99999/kb"', "not a usable URL"),
        ('"http://user:pw@h/kb"', "credentials"),
        ('"http://h/k b"', "not a usable URL"),
    ],
)
def test_only_plain_http_urls(proj: Path, url: str, needle: str) -> None:
    assert needle in refused(proj, definition(url)).message


@pytest.mark.parametrize(
    ("sha", "needle"),
    [("ab" * 31, "is not a sha256"), ("zz" * 32, "is not a sha256")],
)
def test_sha256_is_64_hex_digits(proj: Path, sha: str, needle: str) -> None:
    e = refused(proj, definition("http://h/kb", sha))
    assert needle in e.message and "fetch.sha256.amd64" in e.message


def test_an_unquoted_digit_hash_is_explained(proj: Path) -> None:
    text = definition("http://h/kb").replace(f'amd64: "{SHA}"', "amd64: 1234")
    assert "quote it" in (refused(proj, text).hint or "")


def test_unknown_arch_key(proj: Path) -> None:
    text = definition("http://h/kb").replace("armv7:", "sparc:")
    assert "unknown arch 'sparc'" in refused(proj, text).message


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("usr/bin/kb", "not an absolute file path"),
        ("/usr/../../etc/kb", "leaves the image's root"),
        ("/usr/bin/", "not an absolute file path"),
    ],
)
def test_paths_stay_in_the_root(proj: Path, path: str, needle: str) -> None:
    assert needle in refused(proj, definition("http://h/kb", path=path)).message


@pytest.mark.parametrize(("mode", "needle"), [("0755", "quoted octal"), ('"0999"', "octal mode")])
def test_mode_as_for_files(proj: Path, mode: str, needle: str) -> None:
    assert needle in refused(proj, definition("http://h/kb", mode=mode)).message


def test_unknown_and_missing_keys(proj: Path) -> None:
    text = definition("http://h/kb").replace("      url:", "      uri:")
    e = refused(proj, text)
    assert "unknown key 'uri'" in e.message and "url" in (e.hint or "")


def test_the_url_and_hash_are_part_of_the_image(proj: Path) -> None:
    """The build's cache key hashes the ImageDef: another pin must be another key."""
    import dataclasses

    one = dataclasses.asdict(load(proj, definition("http://h/kb")))
    two = dataclasses.asdict(load(proj, definition("http://h/kb2")))
    three = dataclasses.asdict(load(proj, definition("http://h/kb", OTHER)))
    assert repr(one) != repr(two) and repr(one) != repr(three)


# Fetching and installing, against real loopback servers.


@pytest.fixture
def served(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "kb-x86_64").write_bytes(BODY)
    return www


def test_fetched_once_verified_and_installed(proj: Path, served: Path, tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "root"
    root.mkdir()
    stall = Stall()
    with stalling_server(served, stall) as base:
        image = load(proj, definition(base + "/kb-{{ arch.uname }}"))
        before = NetworkCounter.requests
        extensions.ensure(cache, image)
        assert NetworkCounter.requests == before + 1
        extensions.ensure(cache, image)  # cached by sha256: not asked again
        assert NetworkCounter.requests == before + 1
    assert (cache / "extensions" / SHA).read_bytes() == BODY
    extensions.install(root, image, cache)
    installed = root / "usr/local/bin/kb"
    assert installed.read_bytes() == BODY
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755


def test_wrong_sha256_keeps_nothing(proj: Path, served: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with stalling_server(served, Stall()) as base:
        image = load(proj, definition(base + "/kb-x86_64", OTHER))
        with pytest.raises(FetchError) as info:
            extensions.ensure(cache, image)
    e = info.value
    assert "sha256 mismatch" in e.message and SHA in e.message and OTHER in e.message
    assert "ext.yaml:" in e.message and e.hint and "sha256sum" in e.hint
    assert list((cache / "extensions").iterdir()) == []


def test_not_found_is_not_retried(proj: Path, served: Path, tmp_path: Path) -> None:
    with stalling_server(served, Stall()) as base:
        image = load(proj, definition(base + "/nosuch"))
        before = NetworkCounter.requests
        with pytest.raises(FetchError) as info:
            extensions.ensure(tmp_path / "cache", image)
    assert "HTTP 404" in info.value.message and NetworkCounter.requests == before + 1


def test_a_trickling_server_is_cut_off(
    proj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extensions, "DEADLINE", 1.0)
    with raw_trickle(0.5) as host:
        image = load(proj, definition(f"http://{host}/kb"))
        took, error = within(60, lambda: extensions.ensure(tmp_path / "cache", image))
    assert isinstance(error, FetchError), error
    assert "no complete answer within 1 s" in error.message and error.hint
    assert 3 * 1.0 <= took < 3 * 1.0 + 3 + 3, took  # 3 tries, 2 back-offs
    assert list((tmp_path / "cache/extensions").iterdir()) == []


def test_a_trickled_body_is_cut_off(
    proj: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers whole, then a byte every 0.5 s: the body's deadline is its length at MIN_RATE."""
    monkeypatch.setattr(extensions, "DEADLINE", 1.0)
    monkeypatch.setattr(extensions, "ATTEMPTS", 1)
    with raw_trickle(0.5, body=True) as host:
        image = load(proj, definition(f"http://{host}/kb"))
        took, error = within(30, lambda: extensions.ensure(tmp_path / "cache", image))
    assert isinstance(error, FetchError), error
    assert "no complete answer within" in error.message
    assert took < 1.0 + 4096 / extensions.MIN_RATE + 2, took


def test_too_large_is_refused(
    proj: Path, served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extensions, "MAX_SIZE", 8)
    with stalling_server(served, Stall()) as base:
        image = load(proj, definition(base + "/kb-x86_64"))
        with pytest.raises(FetchError) as info:
            extensions.ensure(tmp_path / "cache", image)
    assert "more than 8" in info.value.message
    assert list((tmp_path / "cache/extensions").iterdir()) == []


def test_a_damaged_cache_entry_never_lands(proj: Path, tmp_path: Path) -> None:
    cache, root = tmp_path / "cache", tmp_path / "root"
    root.mkdir()
    (cache / "extensions").mkdir(parents=True)
    (cache / "extensions" / SHA).write_bytes(BODY + b"tampered")
    image = load(proj, definition("http://h/kb"))
    with pytest.raises(FetchError) as info:
        extensions.install(root, image, cache)
    assert "does not match" in info.value.message and info.value.hint
    assert not (root / "usr/local/bin/kb").exists()
    assert not (cache / "extensions" / SHA).exists()


def test_install_is_confined_to_the_root(proj: Path, tmp_path: Path) -> None:
    """A link in the root pointing out of it is followed inside the root, as the target would."""
    cache, root, outside = tmp_path / "cache", tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (root / "usr").mkdir(parents=True)
    os.symlink(str(outside), root / "usr/local")
    (cache / "extensions").mkdir(parents=True)
    (cache / "extensions" / SHA).write_bytes(BODY)
    extensions.install(root, load(proj, definition("http://h/kb")), cache)
    assert list(outside.iterdir()) == []
    landed = [p for p in root.rglob("kb")]
    assert landed and all(p.read_bytes() == BODY for p in landed)
