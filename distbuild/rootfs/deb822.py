"""Debian's deb822 format: paragraphs of ``Field: value`` lines (apt's .sources, DEP-5)."""

from __future__ import annotations


def paragraphs(text: str) -> list[dict[str, str]]:
    """The paragraphs of ``text``, each a dict of lower-cased field names to values.

    Paragraphs are separated by blank lines; a line starting with ``#`` is a
    comment. A continuation line (starting with a space or a tab) adds a line
    to the field's value, without that first character: the rest of its
    indentation is the value's (a license text keeps its layout).
    """
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                out.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += "\n" + line[1:]
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        out.append(current)
    return out
