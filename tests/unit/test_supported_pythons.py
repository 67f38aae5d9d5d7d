"""What pollkit claims about Python versions, held against what runs it and what checks it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised by `make test-all` on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared() -> list[tuple[int, int]]:
    """The X.Y versions named by the classifiers, sorted."""
    found = []
    for classifier in pyproject()["project"]["classifiers"]:
        match = re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", classifier)
        if match:
            found.append((int(match[1]), int(match[2])))
    return sorted(found)


def test_the_classifiers_name_consecutive_versions_from_requires_python() -> None:
    versions = declared()
    assert versions, "no Programming Language :: Python :: X.Y classifier"
    lowest = versions[0]
    assert pyproject()["project"]["requires-python"] == f">={lowest[0]}.{lowest[1]}"
    assert versions == [(3, minor) for minor in range(lowest[1], versions[-1][1] + 1)]


def test_make_test_all_runs_exactly_the_declared_versions() -> None:
    match = re.search(r"^PYTHONS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile has no PYTHONS line"
    in_makefile = sorted(tuple(int(p) for p in v.split(".")) for v in match[1].split())
    assert in_makefile == declared()


def test_lint_and_types_target_the_lowest_version() -> None:
    major, minor = declared()[0]
    tools = pyproject()["tool"]
    assert tools["ruff"]["target-version"] == f"py{major}{minor}"
    assert tools["mypy"]["python_version"] == f"{major}.{minor}"


def test_this_interpreter_is_one_pollkit_declares() -> None:
    assert sys.version_info[:2] in declared()
