"""Every documentation reference in the source tree points at a file of this repository.

Docstrings and comments cite ``docs/<page>.md`` (optionally ``#anchor``) for the vendors'
behaviour and the design. A citation of a page that does not exist, of a heading that is not
in it, or of a document outside the repository (the old ``APIS.md`` / ``DOWNLOADS.md`` /
``../shared/`` citations) fails here, so a moved or renamed page cannot leave stale pointers.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Where citations live: the package, tests, benchmarks, examples and the front-door README.
SCANNED = ("pollkit", "tests", "benchmarks", "examples", "README.md")
SUFFIXES = {".py", ".md", ".jsonl", ".toml", ".cfg", ".txt"}

#: ``docs/...`` paths that name another project's file (cited with its repository), not ours.
EXTERNAL = {
    "docs/schemas.md": "the Pixy SDK's documentation (pixiee-ai/pixy-sdk)",
}

_REFERENCE = re.compile(r"(?<![\w.-])(?:\.\./)*(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
# Documents that are not in this repository; written in pieces so this file does not match.
_OUTSIDE = re.compile(
    r"\b(?:APIS|DOWNLOADS)" + r"\.md\b|\.\./" + r"shared\b|\bshared/(?:DESIGN|STYLE|specs)\b"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_EXPLICIT_ID = re.compile(r"\{[^}]*#([\w-]+)[^}]*\}\s*$")


def slug(title: str) -> str:
    """A heading's anchor as Python-Markdown's ``toc`` extension (mkdocs) makes it by default."""
    text = re.sub(r"`([^`]*)`", r"\1", title)  # inline code keeps its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # so does a link
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors of every heading of a Markdown page (code blocks skipped)."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            explicit = _EXPLICIT_ID.search(heading.group(1))
            found.add(explicit.group(1) if explicit else slug(heading.group(1)))
    return found


def scanned_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES]
    return sorted(p for p in files if p.resolve() != Path(__file__).resolve())


def problems(root: Path) -> tuple[list[str], int]:
    """Every unresolved or outside reference under `root` (``file:line: what``), and the
    number of references that resolved."""
    found: list[str] = []
    resolved = 0
    cache: dict[Path, set[str]] = {}
    for path in scanned_files(root):
        where = path.relative_to(root)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{where}:{number}: cites a document outside the repository")
            for match in _REFERENCE.finditer(line):
                target, anchor = match.group(1), match.group(2)
                if target in EXTERNAL:
                    continue
                page = root / target
                if not page.is_file():
                    found.append(f"{where}:{number}: {target} does not exist")
                    continue
                if anchor is not None:
                    if page not in cache:
                        cache[page] = anchors(page)
                    if anchor not in cache[page]:
                        found.append(f"{where}:{number}: {target} has no heading #{anchor}")
                        continue
                resolved += 1
    return found, resolved


def test_every_docs_reference_resolves() -> None:
    found, resolved = problems(ROOT)
    assert found == []
    assert resolved >= 30, "the scan found almost no references: is ROOT right?"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# as docs/guide.md says", []),
        ("# as docs/guide.md#second-part says", []),
        ("# see ../docs/guide.md#first", []),
        ('"""As docs/missing.md says."""', ["docs/missing.md does not exist"]),
        ("# docs/guide.md#nowhere", ["docs/guide.md has no heading #nowhere"]),
        ("# a heading inside a code block: docs/guide.md#not-a-heading", ["no heading"]),
        ("# as " + "APIS" + ".md 6.2 says", ["outside the repository"]),
        ("# see ../" + "shared/" + "DESIGN.md", ["outside the repository"]),
        ("# per " + "DOWNLOADS" + ".md", ["outside the repository"]),
        ("# the SDK's docs/schemas.md", []),
    ],
)
def test_the_check_catches_what_it_should(tmp_path: Path, line: str, expected: list[str]) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## First\n\n## Second part {#second-part}\n\n```\n# Not a heading\n```\n",
        encoding="utf-8",
    )
    (tmp_path / "pollkit").mkdir()
    (tmp_path / "pollkit" / "module.py").write_text(line + "\n", encoding="utf-8")
    found, _ = problems(tmp_path)
    assert len(found) == len(expected)
    for problem, words in zip(found, expected, strict=True):
        assert problem.startswith("pollkit/module.py:1: ")
        assert words in problem


def test_slugs_match_mkdocs_headings() -> None:
    assert slug("Status map") == "status-map"
    assert slug("The two status fields") == "the-two-status-fields"
    assert slug("`pollkit run`") == "pollkit-run"
    assert (
        slug("Where the ceiling is, with the arithmetic")
        == "where-the-ceiling-is-with-the-arithmetic"
    )
    assert slug("flux0-style event streams") == "flux0-style-event-streams"
