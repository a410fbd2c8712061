"""The one deb822 reader: apt's .sources files and DEP-5 copyright files."""

from __future__ import annotations

from pathlib import Path

from distbuild.rootfs.deb822 import paragraphs
from distbuild.rootfs.sources import host_sources
from distbuild.sbom.licenses import declared

KEY = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
    ".\n"
    "mDMEZ0xcTRYJKwYBBAHaRw8BAQdA\n"
    "-----END PGP PUBLIC KEY BLOCK-----"
)


def test_paragraphs_fields_comments_and_continuations() -> None:
    text = (
        "# a comment before the first paragraph\n"
        "Format: https://example.invalid/dep5\n"
        "Upstream-Name: x\n"
        "\n"
        "\n"
        "Files: *\n"
        "# a comment inside a paragraph does not end it\n"
        "License: Custom\n"
        " First line.\n"
        " .\n"
        "     indented, as the author wrote it  \n"
        "\tafter a tab\n"
        "  \t \n"
        "FIELD-in-Caps :  spaced value \n"
    )
    assert paragraphs(text) == [
        {"format": "https://example.invalid/dep5", "upstream-name": "x"},
        {
            "files": "*",
            "license": "Custom\nFirst line.\n.\n    indented, as the author wrote it  \nafter a tab",
        },
        {"field-in-caps": "spaced value"},
    ]


def test_paragraphs_of_nothing() -> None:
    assert paragraphs("") == []
    assert paragraphs("# only a comment\n\n \n") == []


def test_dep5_license_text_keeps_its_layout() -> None:
    text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nLicense: Custom-1\n\n"
        "License: Custom-1\n Permission is granted\n .\n   to nobody.\n"
    )
    got = declared(text, "pkg")
    assert got.extracted == {"LicenseRef-Custom-1": "Permission is granted\n\n  to nobody."}


def test_sources_with_an_inline_key_write_back_the_same_key(tmp_path: Path) -> None:
    etc = tmp_path / "etc/apt/sources.list.d"
    etc.mkdir(parents=True)
    inline = "".join(f"\n {line}" for line in KEY.splitlines())
    (etc / "x.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm\nComponents: main\n"
        f"Signed-By:{inline}\n"
    )
    [source] = host_sources(tmp_path)
    assert source.signed_by == "\n" + KEY
    [again] = paragraphs(source.deb822())
    assert again["signed-by"] == "\n" + KEY
    assert again["suites"] == "bookworm"
