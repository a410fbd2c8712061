"""No image definition acts outside the image's root (issue 9, host escapes).

Each case customises a small synthetic root (a few packages' worth of links)
inside a private mount namespace where a tmpfs *trap* is mounted over a host
path, seeded with a victim file. The root holds links to the trap the way a
package could ship them. Passing means: the trap is exactly as seeded, and
the definition either failed with an error naming its file:line and key, or
its write landed inside the root, where the target system will see it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from distbuild.core.arch import ARCHES
from distbuild.core.errors import RecipeError
from distbuild.model.image import ImageDef, load_image
from distbuild.model.recipe import load_recipe
from distbuild.rootfs.customise import customise
from tests.support.sandbox import Outcome, run_sandboxed, trap_untouched

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
UP = "/.." * 12  # more than enough to climb from any tmp root to the host's /


class Case:
    """A project with one image definition, a synthetic root, and a trap."""

    def __init__(self, tmp_path: Path) -> None:
        self.trap = Path(f"/tmp/distbuild-trap-{secrets.token_hex(4)}")
        self.seeds = {self.trap: {"victim": b"host file"}}
        self.project = tmp_path / "proj"
        (self.project / "images").mkdir(parents=True)
        shutil.copytree(REPO / "recipes", self.project / "recipes")
        self.root = tmp_path / "root"
        for d in ("etc", "usr/bin", "usr/share", "tmp", "home"):
            (self.root / d).mkdir(parents=True)
        (self.root / "bin").symlink_to("usr/bin")
        # What a package could ship: links that name the trap on the host.
        (self.root / "etc/abs").symlink_to(str(self.trap))
        (self.root / "etc/rel").symlink_to("../../../../../../../.." + str(self.trap))
        (self.root / "etc/file").write_text("not a directory")
        (self.root / "etc/loop").symlink_to("loop")

    def image(self, body: str) -> Callable[[], ImageDef]:
        (self.project / "images/evil.yaml").write_text(f"name: evil\n{body}")
        return lambda: load_image(self.project, "evil", load_recipe(self.project, ARCHES["amd64"]))

    def run(self, body: str | ImageDef) -> Outcome:
        load = self.image(body) if isinstance(body, str) else (lambda: body)

        def target() -> Any:
            customise(self.root, load(), {"VERSION": "1"})

        out = run_sandboxed(target, traps=self.seeds, timeout=60)
        assert not out.timed_out, "customisation hung"
        trap_untouched(out, self.seeds)
        return out

    def refused(self, body: str | ImageDef, line: int, key: str) -> RecipeError:
        out = self.run(body)
        assert isinstance(out.error, RecipeError), out.stderr
        assert out.error.where == f"{self.project / 'images/evil.yaml'}:{line}", out.error
        assert out.error.key == key
        assert out.error.hint
        return out.error

    def ok(self, body: str) -> None:
        out = self.run(body)
        assert out.returncode == 0 and out.error is None, out.stderr

    def inside(self, rel: str) -> Path:
        """Where a path through the trap links lands: the trap's path inside the root."""
        return self.root / str(self.trap).lstrip("/") / rel


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case(tmp_path)


ESCAPES = {
    "files": ('files:\n  "{up}{trap}/victim": "pwned"\n', 3, "files.{up}{trap}/victim"),
    "directories": ("directories:\n  - {up}{trap}/made\n", 3, "directories[0]"),
    "symlinks": (
        'symlinks:\n  "{up}{trap}/victim": /etc/passwd\n',
        3,
        "symlinks.{up}{trap}/victim",
    ),
    "users.home": (
        "users:\n  - name: evil\n    uid: 1000\n    home: {up}{trap}/home\n",
        5,
        "users[0].home",
    ),
    "remove": ("remove:\n  - {up}{trap}/victim\n", 3, "remove[0]"),
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_dotdot_out_of_the_root_is_refused_at_its_line(case: Case, kind: str) -> None:
    body, line, key = ESCAPES[kind]
    fill = {"up": UP, "trap": case.trap}
    err = case.refused(body.format(**fill), line, key.format(**fill))
    assert "leaves the image's root" in err.message


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_files_through_a_package_link_land_inside(case: Case, link: str) -> None:
    case.ok(f'files:\n  "/etc/{link}/victim": "image file"\n')
    assert case.inside("victim").read_text() == "image file"


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_directories_and_homes_through_a_package_link_land_inside(case: Case, link: str) -> None:
    case.ok(
        f"directories:\n  - /etc/{link}/made/deeper\n"
        f"users:\n  - name: evil\n    uid: 1000\n    home: /etc/{link}/home\n"
    )
    assert case.inside("made/deeper").is_dir()
    home = case.inside("home").stat()
    assert (home.st_uid, home.st_mode & 0o777) == (1000, 0o755)


def test_symlinks_through_a_package_link_land_inside(case: Case) -> None:
    case.ok('symlinks:\n  "/etc/abs/victim": /etc/passwd\n')
    assert os.readlink(case.inside("victim")) == "/etc/passwd"


def test_remove_through_a_package_link_stays_inside(case: Case) -> None:
    case.inside("").mkdir(parents=True)
    case.inside("victim").write_text("the root's own")
    case.ok("remove:\n  - /etc/abs/victim\n  - /etc/rel/*\n")
    assert not case.inside("victim").exists()


def test_overlay_through_a_package_link_lands_inside(case: Case) -> None:
    overlay = case.project / "images/overlay"
    (overlay / "etc/abs/sub").mkdir(parents=True)
    (overlay / "etc/abs/victim").write_text("from the overlay")
    (overlay / "etc/abs/sub/link").symlink_to("/etc/shadow")
    case.ok("overlay: overlay\n")
    assert case.inside("victim").read_text() == "from the overlay"
    assert os.readlink(case.inside("sub/link")) == "/etc/shadow"


def test_links_made_by_the_definition_are_followed_inside(case: Case) -> None:
    # symlinks: come before overlay and remove; the link it makes names the host.
    overlay = case.project / "images/overlay"
    (overlay / "etc/mine").mkdir(parents=True)
    (overlay / "etc/mine/victim").write_text("overlay")
    case.ok(
        f'symlinks:\n  "/etc/mine": "{case.trap}"\noverlay: overlay\nremove:\n  - /etc/mine/gone\n'
    )
    assert case.inside("victim").read_text() == "overlay"


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/etc/loop/x", "symlinks (a loop?)"), ("/etc/file/x", "is not a directory")],
)
def test_unresolvable_paths_are_errors_at_their_line(case: Case, path: str, reason: str) -> None:
    for key, body, line in [
        (f"files.{path}", f'files:\n  "{path}": "x"\n', 3),
        ("directories[1]", f"directories:\n  - /ok\n  - {path}\n", 4),
        (f"symlinks.{path}", f'symlinks:\n  "{path}": /x\n', 3),
    ]:
        err = case.refused(body, line, key)
        assert reason in err.message


def test_the_resolver_refuses_even_past_the_loader(case: Case) -> None:
    # Defence in depth: a model built some other way still cannot leave the root.
    image = case.image('files:\n  "/etc/x": "x"\n')()
    origin = tuple((f"files:{UP}{case.trap}/victim", w, k) for _, w, k in image.entry_origin)
    evil = replace(image, files=(replace(image.files[0], path=f"{UP}{case.trap}/victim"),))
    err = case.refused(replace(evil, entry_origin=origin), 3, "files./etc/x")
    assert "leaves the root" in err.message


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_special_files_in_the_overlay_are_refused_without_hanging(case: Case, kind: str) -> None:
    overlay = case.project / "images/overlay"
    (overlay / "etc").mkdir(parents=True)
    special = overlay / "etc/special"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(special))
        s.close()
    err = case.refused("description: x\noverlay: overlay\n", 3, "overlay")
    # The loader refuses it first (h9-defs); customisation refuses it again if
    # one appears after loading, naming its type.
    assert "special" in err.message
    assert any(w in err.message for w in ("FIFO", "socket", "not a file, directory or symlink"))
    assert not (case.root / "etc/special").exists()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('files:\n  "/etc/a\\0b": "x"\n', "files./etc/a\0b"),
        ('directories:\n  - "/a\\0b"\n', "directories[0]"),
        ('symlinks:\n  /etc/l: "/a\\0b"\n', "symlinks./etc/l"),
    ],
)
def test_nul_in_a_path_is_an_error_at_its_line(case: Case, body: str, key: str) -> None:
    with pytest.raises(RecipeError, match="NUL") as info:
        case.image(body)()
    assert info.value.where == f"{case.project / 'images/evil.yaml'}:3"
    # The YAML reader refuses a NUL anywhere with file:line; the path checks
    # behind it name the key too (for models built without the reader).
    assert info.value.key in (key, None)
