"""Hypothesis strategies: image definitions, build records and argv from hostile pieces.

A definition is emitted as YAML text (block keys, flow values) so that the
pieces a data model cannot hold survive: Jinja expressions, tags, anchors and
aliases. Scalars are JSON strings, which are valid YAML double-quoted scalars
(control characters become ``\\u00XX`` escapes, NUL included).

Every host path a piece aims at is under ``TRAP``, a tmpfs the sandbox checks
after each example; ``/etc/trap`` and friends are links the synthetic root
ships that point there (absolutely, or with enough ``..``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

TRAP = "/tmp/distbuild-hostile-trap"
UP = "../" * 12


@dataclass(frozen=True)
class Raw:
    """YAML text emitted as is (a tag, an alias, a Jinja block, a number)."""

    text: str


def emit(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value) if not isinstance(value, float) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(emit(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{emit(k)}: {emit(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


ODD = [
    "a\u202eb",  # right-to-left override
    "zero\u200bwidth",
    "e\u0301",  # combining accent
    "\u2028",  # a line separator YAML may read as a break
    "\x01",
    "\x1b[31m",
    "\x7f",
    "\0",
    "x" * 300,
    "\ufeff",
    "\U0001f600",
    "tab\there",
    " ",
]

ESCAPING_PATHS = [
    f"{UP}{TRAP[1:]}/up",
    f"/{UP}{TRAP[1:]}/slash-up",
    f"{TRAP}/absolute",
    "/etc/trap/through-absolute-link",
    "/etc/uptrap/through-relative-link",
    "/usr/bin/pager",  # /usr/bin/pager -> /etc/alternatives/pager -> TRAP/pager
    "/etc/alternatives/pager",
    "/var/run/through-run",
    f"/bin/{UP}{TRAP[1:]}/bin-up",
    "/etc/trap",
    "/etc/uptrap",
    "/etc/trap/../trap/again",
    "/etc/loop",  # a link to itself
    "/etc/dangling/x",
]
ODD_PATHS = ["/", "", ".", "..", "/.", "/..", "//", "relative/path", "/etc/", "/etc//x", "-x"]
SEGMENTS = ["..", ".", "etc", "trap", "uptrap", "bin", "usr", "tmp", "x", "alternatives", *ODD]


@st.composite
def composed_path(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
    return ("/" if draw(st.booleans()) else "") + "/".join(parts)


paths = st.one_of(
    st.sampled_from(ESCAPING_PATHS),
    st.sampled_from(["/etc/ok", "/usr/local/share/ok", "/srv/a/b/c", "/tmp/x"]),
    st.sampled_from(ODD_PATHS),
    composed_path(),
)

NUMBERS = [
    0,
    1000,
    -1,
    -(2**31),
    2**32 - 2,
    2**32 - 1,
    2**32,
    2**63,
    10**26,
    Raw("1e400"),
    Raw(".inf"),
    Raw(".nan"),
    Raw("0x10"),
    Raw("0o17"),
    Raw("true"),
    Raw("null"),
    "1000",
    Raw("~"),
]
numbers = st.sampled_from(NUMBERS)
MODES = ["0644", "0755", "07777", "017777", "-1", "0", "9", "0o755", "", "0x1ff", "7" * 30, "1e3"]

JINJA = [
    "{{ arch.name }}",
    "{{ recipe.debian.suite }}",
    "{{ cycler.__init__.__globals__.os.popen('touch " + TRAP + "/jinja-popen').read() }}",
    "{{ lipsum.__globals__['os'].system('touch " + TRAP + "/jinja-lipsum') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() | length }}",
    "{{ recipe.__class__.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% include '/etc/hostname' %}",
    "{% include '" + UP + "etc/passwd' %}",
    "{% include 'include/ok.yaml' %}",
    "{% include 'fifo' %}",
    "{% import '/etc/os-release' as x %}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ 'x' * 10 }}",
    "{{ nope }}",
    "{{ arch.name.__class__ }}",
    "{% raw %}",
    "{{",
    "{#",
]
TAGS = [
    '!!python/object/apply:os.system ["touch ' + TRAP + '/tag"]',
    "!!python/name:os.system",
    "!!python/object:__main__.X {a: 1}",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "!!omap [a: 1]",
    "!custom x",
    "!!float nan",
    "!!str 1",
    "!<tag:yaml.org,2002:python/tuple> [1]",
]
LAUGHS = (
    "[&l0 [x, x, x, x, x, x, x, x, x], "
    + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10))
    + "]"
)
ANCHORS = [LAUGHS, "&self [*self]", "*undefined", "{<<: *undefined}", "&m {a: 1}", "[&s x, *s]"]

raw_piece = st.one_of(
    st.sampled_from(TAGS).map(Raw),
    st.sampled_from(ANCHORS).map(Raw),
    st.sampled_from(NUMBERS),
    st.sampled_from(JINJA).map(Raw),
)
text = st.one_of(
    st.sampled_from(["hi", "line\n", "", "#!/bin/sh\nexit 0\n"]),
    st.sampled_from(JINJA),
    st.sampled_from(ODD),
    st.text(max_size=20),
)
names = st.one_of(
    st.sampled_from(["svc", "root", "nobody", "a-b", "_x", "daemon"]),
    st.sampled_from(ODD),
    st.sampled_from(["..", "../x", "a:b", "a\nb", "Upper", "x" * 40]),
)


def wrong(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-typed hostile values, sometimes a raw piece of any type."""
    return st.one_of(good, good, good, raw_piece)


def file_spec() -> st.SearchStrategy[Any]:
    mapping = st.fixed_dictionaries(
        {"content": wrong(text)}, optional={"mode": wrong(st.sampled_from(MODES))}
    )
    return wrong(st.one_of(text, mapping))


def user() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"name": wrong(names), "uid": numbers},
        optional={
            "gid": numbers,
            "home": wrong(paths),
            "shell": wrong(paths),
            "groups": wrong(st.lists(names, max_size=2)),
        },
    )


OVERLAYS = ["../overlays/plain", "../overlays/links", "../overlays/fifo", "/etc", "/root/.ssh"]
OVERLAYS += [TRAP, UP + "etc", "../overlays/outside-link", "/dev", "/proc/self", ""]
INCLUDES = ["include/ok.yaml", "/etc/hostname", UP + "etc/passwd", "/dev/zero", "fifo"]
INCLUDES += ["include/loop.yaml", "include/link-out.yaml", "/proc/self/environ", "../images"]
PACKAGES = ["busybox", "../busybox", "Busybox", "-x", "a" * 200, "b\u202eusybox", "busybox\n"]

BODY: dict[str, st.SearchStrategy[Any]] = {
    "files": wrong(st.dictionaries(paths, file_spec(), max_size=3)),
    "directories": wrong(st.lists(wrong(paths), max_size=3)),
    "symlinks": wrong(st.dictionaries(paths, wrong(paths), max_size=3)),
    "remove": wrong(st.lists(wrong(st.one_of(paths, st.just("*"))), max_size=2)),
}
TOP: dict[str, st.SearchStrategy[Any]] = {
    **BODY,
    "description": wrong(text),
    "users": wrong(st.lists(user(), max_size=2)),
    "groups": wrong(st.lists(st.fixed_dictionaries({"name": names, "gid": numbers}), max_size=2)),
    "overlay": wrong(st.sampled_from(OVERLAYS)),
    "include": wrong(st.sampled_from(INCLUDES)),
    "outputs": wrong(st.lists(st.sampled_from(["oci", "root", "disk", "../oci", "x"]), max_size=2)),
    "config": wrong(
        st.fixed_dictionaries(
            {},
            optional={
                "cmd": st.lists(text, max_size=2),
                "env": st.lists(text, max_size=2),
                "workdir": paths,
                "user": names,
                "labels": st.dictionaries(text, text, max_size=2),
            },
        )
    ),
    "version": wrong(st.sampled_from(["1.0", "../..", "/../x", "1.0/..", "~", "v" * 200])),
    "overrides": wrong(
        st.dictionaries(st.sampled_from(["amd64", "arm64", "x86", "../amd64"]), st.just({}))
    ),
}


# Paths a definition may write that lead out of the root through its own links:
# valid, so they must land inside it.
THROUGH_LINKS = [p for p in ESCAPING_PATHS if not p.lstrip("/").startswith("..")]
inside = st.one_of(st.sampled_from(THROUGH_LINKS), st.sampled_from(THROUGH_LINKS), paths)
uids = st.one_of(st.sampled_from([0, 1000, 65534, 2**32 - 2]), numbers)

# Well-formed values whose paths are hostile: these reach customisation.
ROOT_PATHS: dict[str, st.SearchStrategy[Any]] = {
    "files": st.dictionaries(
        inside,
        st.one_of(
            st.just("x"),
            st.fixed_dictionaries({"content": st.just("x"), "mode": st.sampled_from(MODES)}),
        ),
        min_size=1,
        max_size=3,
    ),
    "directories": st.lists(inside, min_size=1, max_size=3),
    "symlinks": st.dictionaries(inside, inside, min_size=1, max_size=3),
    "remove": st.lists(st.one_of(inside, st.sampled_from(["*", "etc/*", "*/trap"])), max_size=2),
    "users": st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["svc", "app"]), "uid": uids},
            optional={"gid": uids, "home": inside, "shell": paths},
        ),
        min_size=1,
        max_size=2,
        unique_by=lambda u: u["name"],
    ),
    "groups": st.lists(
        st.fixed_dictionaries({"name": st.sampled_from(["grp", "svc"]), "gid": uids}),
        max_size=2,
        unique_by=lambda g: g["name"],
    ),
    "overlay": st.sampled_from(OVERLAYS),
}


@st.composite
def definition(
    draw: st.DrawFn, name: str, packages: bool = True, wellformed: bool | None = None
) -> str:
    """The text of ``images/<name>.yaml``: a name, packages, then hostile keys.

    Half of them are well-formed but for their paths (so that they reach
    customisation), half are built from any hostile piece.
    """
    if wellformed is None:
        wellformed = draw(st.booleans())
    table = ROOT_PATHS if wellformed else TOP
    keys = draw(st.lists(st.sampled_from(sorted(table)), unique=True, min_size=1, max_size=5))
    lines = [f"name: {name}"]
    if table is ROOT_PATHS:
        lines.append("packages: [busybox]" if not packages else "packages: []")
        for key in keys:
            lines.append(f"{key}: {emit(draw(table[key]))}")
        return "\n".join(lines) + "\n"
    if packages:
        pkgs = draw(st.lists(wrong(st.sampled_from(PACKAGES)), max_size=2))
        lines.append(f"packages: {emit(pkgs)}")
    else:
        lines.append("packages: [busybox]")
    for key in keys:
        lines.append(f"{key}: {emit(draw(TOP[key]))}")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(JINJA)))
    return "\n".join(lines) + "\n"


RECORD_MUTATIONS: dict[str, list[Any]] = {
    "image": ["..", "../tiny", "a/b", "", "TINY", "x" * 300, None, 7],
    "version": ["..", "../..", f"/{UP}{TRAP[1:]}", "a/b", "\u202e1", "", "-1", None, 10**26, []],
    "source_date_epoch": [-1, 10**30, "x", None],
    "arch": ["all", "..", "x86", "amd64/../..", "", None],
    "kind": ["oci", "oci-index", "../root", "sbom", "", None],
    "path": [
        "../../../../etc/passwd",
        "/etc/passwd",
        "amd64/../../../x",
        "amd64/link-out",
        "amd64/fifo",
        "",
        ".",
        "amd64",
        None,
    ],
    "sha256": ["0" * 64, "zz", "", "../" * 20, None],
    "size": [0, -1, 10**30, 2**63, "5", None],
}
RECORD_KEYS = ("image", "version", "source_date_epoch")


@st.composite
def build_record(draw: st.DrawFn, good: dict[str, Any]) -> dict[str, Any]:
    """A copy of the valid build.json ``good`` with up to three hostile fields."""
    record = json.loads(json.dumps(good))
    for key in draw(st.lists(st.sampled_from(sorted(RECORD_MUTATIONS)), max_size=3)):
        value = draw(st.sampled_from(RECORD_MUTATIONS[key]))
        if key in RECORD_KEYS:
            target = record
        elif record["artifacts"]:
            target = record["artifacts"][draw(st.integers(0, len(record["artifacts"]) - 1))]
        else:
            continue
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    if draw(st.integers(0, 9)) == 0:
        record["artifacts"] = draw(
            st.sampled_from([[], {}, "x", [None], [record["artifacts"][0]] * 2])
        )
    return record


CLI_NAMES = ["tiny", "nolock", "fuzz", "..", "../tiny", "/etc", "a/b", "-x", "--help", ""]
CLI_NAMES += ["x" * 200, "tiny\n", "t\u202einy", "TINY", "ti~ny", ".hidden", "a..b", "\x7f", "\x1b"]
VERSIONS = ["1.0.0", "1.0.0+b~1", "..", "../..", f"/{UP}{TRAP[1:]}/v", "1.0/..", "-1", "v" * 300]
VERSIONS += ["\x01", " ", "", ".", "1.0.0\n", "\u202e1"]
ARCHES = ["amd64", "all", "armv7,arm64", "x86_64", "../amd64", "amd64,", ",", "", "AMD64"]
PORTS = ["1", "9", "0", "-1", "65535", "65536", "99999", "1" + "0" * 30, "x", ""]
HOSTS = ["127.0.0.1", "[::1]", "localhost", "127.0.0.1:", "[::1", "127.0.0.1/x"]
REPOS = ["repo", "../repo", "a/b/c", "UP", "", "repo/", "..", "r" * 300]
TAGS_CLI = ["latest", "..", "-x", "a" * 200, "", "a:b", "\x01"]
CHANNELS = ["alpha", "beta", "../alpha", "/etc/passwd", "nope", "", "a\u202e", "alpha\n", "."]
PLATFORMS = ["linux/amd64", "linux/arm/v7", "linux/../..", "", "linux", "windows/amd64"]
EPOCHS = ["0", "1764201600", "-1", "2" * 30, "x", "", "253402300800"]


@st.composite
def one(draw: st.DrawFn, values: list[str]) -> str:
    """The first (valid) value about three times in four, else a hostile one.

    (A one_of of equal branches was not enough: hypothesis favours edge cases.)
    """
    if draw(st.booleans()) or draw(st.booleans()):
        return values[0]
    return draw(st.sampled_from([*values[1:], *ODD]))


@st.composite
def ref(draw: st.DrawFn) -> str:
    port = draw(one(PORTS))
    return f"{draw(one(HOSTS))}:{port}/{draw(one(REPOS))}:{draw(one(TAGS_CLI))}"
