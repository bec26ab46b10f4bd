"""Every path the repository cites exists in the repository, and nothing cites documents outside it.

Checked in every tracked text file: markdown links (``[text](target)``), ``docs/...`` paths and
relative ``../`` paths anywhere (code comments included), and, in markdown, code spans naming a
source file (``model/bitvla.py``, ``test_config.py::test_x``; a bare name only for a test file). Background documents that are not
part of the repository must not be cited at all: what a reader needs is written in docs/.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".md", ".txt", ".cfg", ".ini", ".yaml", ".yml", ".xml", ".cpp", ".h", ".sh", ".toml", ""}
SKIP_DIRS = {".git", ".venv", ".cache", "build", "install", "log", "out", "__pycache__"}

MARKDOWN_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]*")
PARENT_PATH = re.compile(r"(?<![\w/.-])(?:\.\./)+[\w./-]*")
CODE_SPAN = re.compile(r"`([^`\s]+)`")
SOURCE_FILE = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.(?:py|h|cpp|sh|md|yaml)(?:::\w+)?$")
# Documents that were background reading and are not in the repository (names split so that this
# file does not match itself).
OUTSIDE = re.compile("|".join([
    r"\.\./" + "shared",
    r"\b(?:reference/)?(?:bitvla|libero_expert|environment|anchors)" + r"\.md\b",
    r"\bDESIGN" + r"\.md\b",
    r"§\s?\d",  # a section of one of them, cited without the file
]))


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        files = [REPO / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file outside build dirs
        files = [p for p in REPO.rglob("*") if not SKIP_DIRS & set(p.relative_to(REPO).parts)]
    return [p for p in files if p.is_file() and p.suffix in TEXT_SUFFIXES and p != Path(__file__).resolve()]


def _exists(target: str, *bases: Path) -> bool:
    target = target.split("#")[0].split("?")[0].rstrip(".,;:")
    if not target:
        return True  # a link to an anchor of the same page
    for base in bases:
        path = (base / target).resolve()
        if path.is_relative_to(REPO) and path.exists():
            return True
    return False


def broken_links(path: Path, text: str) -> list[str]:
    """The cited paths in ``text`` (the content of ``path``) that are not in the repository."""
    here, broken = path.parent, []
    if path.suffix == ".md":
        for target in MARKDOWN_LINK.findall(text):
            if not re.match(r"[a-z]+:", target) and not _exists(target, here):
                broken.append(target)
        for span in CODE_SPAN.findall(text):
            name = span.split("::")[0]
            # a bare file name is checked only for a test file: others name files of other projects
            if SOURCE_FILE.match(span) and ("/" in name or name.startswith("test_")):
                if not _exists(name, here, REPO, REPO / "bitvla_ros", REPO / "test"):
                    broken.append(span)
    for target in DOCS_PATH.findall(text):
        if not _exists(target, REPO, here):
            broken.append(target)
    for target in PARENT_PATH.findall(text):
        if not _exists(target, here):
            broken.append(target)
    return list(dict.fromkeys(broken))


def test_every_cited_path_exists():
    problems = {}
    for path in tracked_files():
        broken = broken_links(path, path.read_text(errors="replace"))
        if broken:
            problems[str(path.relative_to(REPO))] = sorted(set(broken))
    assert not problems, f"these files cite paths that are not in the repository (fix or drop them): {problems}"


def test_nothing_cites_documents_outside_the_repository():
    cited = {}
    for path in tracked_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                cited.setdefault(str(path.relative_to(REPO)), []).append(number)
    assert not cited, ("these lines cite documents that are not in the repository; point to docs/ instead "
                       f"(file: line numbers): {cited}")


@pytest.mark.parametrize("text,broken", [
    ("see [the model](docs/model.md) and [x](https://example.org) and [top](#top)", []),
    ("see [gone](docs/nope.md)", ["docs/nope.md"]),
    ("# comment: the layout is in docs/quantization.md.", []),
    ("# comment: docs/missing.md explains it", ["docs/missing.md"]),
    ("# see ../outside/notes.md", ["../outside/notes.md"]),
    ("`model/bitvla.py` and `test_config.py::test_published_names_and_defaults_of_absent_keys`", []),
    ("`model/gone.py`", ["model/gone.py"]),
])
def test_the_checker_finds_broken_paths(text, broken):
    assert broken_links(REPO / "README.md", text) == broken


def test_the_checker_finds_outside_citations():
    assert OUTSIDE.search("see reference/bitvla" + ".md §6")
    assert OUTSIDE.search("(§1.5)")
    assert OUTSIDE.search("# ../" + "shared/DESIGN" + ".md")
    assert not OUTSIDE.search("see docs/libero.md (published protocol)")
