"""Declared run-time dependencies are exactly the distributions `pollkit/` imports.

A dependency nobody imports costs every user an install (``aiofiles`` was one); an import
nobody declared breaks on a clean machine. Imports that only optional-extra modules make are
held against that extra instead of the run-time list.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pollkit"
PYPROJECT = PACKAGE.parent / "pyproject.toml"

#: extra → the modules (dotted prefixes) allowed to import what only that extra installs.
#: The pytest plugin is loaded by pytest alone (entry point ``pytest11``); it is listed under
#: both its current and its planned home.
OPTIONAL_MODULES: dict[str, tuple[str, ...]] = {
    "test": ("pollkit.testing.pytest_plugin", "pollkit.testing"),
    "fsspec": ("pollkit.download._destination",),
    "postgres": ("pollkit.batch.journal._postgres",),
    "dask": ("pollkit.cluster",),
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _canonical(match.group(1))


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The run-time requirements and each extra's, by canonical distribution name."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed metadata says the same
        requires = importlib.metadata.requires("pollkit") or []
        runtime = {_requirement_name(r) for r in requires if "extra ==" not in r}
        extras: dict[str, set[str]] = {}
        for r in requires:
            if "extra ==" in r:
                extra = r.split("extra ==")[1].strip().strip("\"'")
                extras.setdefault(extra, set()).add(_requirement_name(r))
        return runtime, extras
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_requirement_name(r) for r in requirements}
        for extra, requirements in project.get("optional-dependencies", {}).items()
    }
    return runtime, extras


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_top_levels(path: Path) -> set[str]:
    """Top-level names of every absolute import in one file, wherever it sits."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n != "pollkit" and n not in sys.stdlib_module_names}


def _extra_of(module: str) -> str | None:
    for extra, prefixes in OPTIONAL_MODULES.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return extra
    return None


def _packages_distributions() -> dict[str, list[str]]:
    """Top-level import name → the distributions that provide it.

    `importlib.metadata.packages_distributions` reads only ``top_level.txt`` before Python 3.11,
    and wheels built by modern backends (pydantic's, backoff's) have none; so, like 3.11's, this
    also infers the names from each distribution's files.
    """
    owners: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        names = (dist.read_text("top_level.txt") or "").split()
        if not names:
            names = sorted(
                {f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
                 for f in dist.files or () if f.suffix == ".py"}
            )  # fmt: skip
        for name in names:
            owners.setdefault(name, []).append(dist.metadata["Name"])
    return owners


def _imported_distributions() -> tuple[set[str], dict[str, set[str]]]:
    """Distributions imported outside optional modules, and those imported per extra."""
    owners = _packages_distributions()
    runtime: set[str] = set()
    extras: dict[str, set[str]] = {}
    unresolved: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        extra = _extra_of(_module_name(path))
        for name in _imported_top_levels(path):
            distributions = owners.get(name)
            if not distributions:
                unresolved.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
                continue
            target = runtime if extra is None else extras.setdefault(extra, set())
            target.update(_canonical(d) for d in distributions)
    assert unresolved == [], "imports that no installed distribution provides"
    return runtime, extras


def test_runtime_dependencies_are_exactly_what_the_package_imports() -> None:
    declared, _ = _declared()
    imported, _ = _imported_distributions()
    assert imported, "the scan found no third-party import at all: is PACKAGE right?"
    assert sorted(declared - imported) == [], "declared but never imported: drop them"
    assert sorted(imported - declared) == [], "imported but not declared: add them"


def test_optional_modules_import_only_their_extra_or_runtime_dependencies() -> None:
    declared, declared_extras = _declared()
    _, imported_extras = _imported_distributions()
    for extra, distributions in imported_extras.items():
        assert extra in declared_extras, f"OPTIONAL_MODULES names an unknown extra {extra!r}"
        assert sorted(distributions - declared_extras[extra] - declared) == [], extra


def test_every_optional_module_prefix_exists() -> None:
    """A stale entry in OPTIONAL_MODULES would silently stop guarding anything."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for extra, prefixes in OPTIONAL_MODULES.items():
        assert any(m == p or m.startswith(p + ".") for p in prefixes for m in modules), (
            f"no module under {prefixes} for extra {extra!r}"
        )


def test_the_scan_sees_imports_inside_functions_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import os, aiohttp.web\nfrom tqdm.auto import tqdm\nfrom . import sibling\n"
        "def later() -> None:\n    import backoff\n    from pollkit import errors\n",
        encoding="utf-8",
    )
    assert _imported_top_levels(source) == {"aiohttp", "tqdm", "backoff"}
