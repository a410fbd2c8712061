from __future__ import annotations

import pytest

from distbuild.core.arch import ARCHES, Platform, arch_for_platform, normalize, parse_arches
from distbuild.core.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/arm/v7", Platform("linux", "arm", "v7")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/aarch64", Platform("linux", "arm64", None)),
        ("linux/arm64/v8", Platform("linux", "arm64", None)),
        ("linux/x86_64", Platform("linux", "amd64", None)),
        ("amd64", Platform("linux", "amd64", None)),
    ],
)
def test_platforms_normalise_like_containerd(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected


def test_table_matches_design() -> None:
    assert str(ARCHES["armv7"].platform) == "linux/arm/v7"
    assert str(ARCHES["arm64"].platform) == "linux/arm64"
    assert str(ARCHES["amd64"].platform) == "linux/amd64"
    assert [a.uname for a in ARCHES.values()] == ["armv7l", "aarch64", "x86_64"]
    assert arch_for_platform(Platform("linux", "aarch64", "v8")) is ARCHES["arm64"]
    assert normalize(Platform("linux", "arm", "7")).variant == "v7"


def test_parse_arches() -> None:
    assert [a.name for a in parse_arches(("all",))] == ["armv7", "arm64", "amd64"]
    assert [a.name for a in parse_arches(("amd64,armv7",))] == ["armv7", "amd64"]
    with pytest.raises(UsageError) as e:
        parse_arches(("sparc",))
    assert e.value.hint and "armv7" in e.value.hint
