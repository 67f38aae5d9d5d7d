"""The public surface: `__all__` is sorted, complete, and every name has a docstring."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pollkit
import pollkit.errors


def test_all_is_sorted_and_exported() -> None:
    assert pollkit.__all__ == sorted(pollkit.__all__)
    for name in pollkit.__all__:
        assert hasattr(pollkit, name), name


def test_every_error_is_exported_from_the_top_level() -> None:
    errors = {
        name
        for name, obj in vars(pollkit.errors).items()
        if inspect.isclass(obj) and issubclass(obj, pollkit.PollkitError)
    }
    assert errors <= set(pollkit.__all__)
    assert sorted(pollkit.errors.__all__) == pollkit.errors.__all__


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = [
        name
        for name in pollkit.__all__
        if (inspect.isclass(getattr(pollkit, name)) or inspect.isfunction(getattr(pollkit, name)))
        and not inspect.getdoc(getattr(pollkit, name))
    ]
    assert missing == []


def test_errors_are_also_builtin_kinds() -> None:
    assert issubclass(pollkit.ConfigurationError, ValueError)
    assert issubclass(pollkit.PollTimeout, TimeoutError)
    assert issubclass(pollkit.ReadTimeout, TimeoutError)


def test_names_are_imported_on_first_use_and_the_download_command_stays_lean() -> None:
    """`import pollkit` and `pollkit download` load only what they use (pollkit._lazy); every
    exported name still resolves, and a wrong one fails as an attribute error would."""
    probe = """
import json, sys
import pollkit
lean = ("aiohttp", "aiohttp.web", "fsspec", "pollkit.batch.journal._sqlite", "pollkit.sim")
after_import = sorted(m for m in lean if m in sys.modules)
names = {n: type(getattr(pollkit, n)).__name__ for n in pollkit.__all__}
try:
    pollkit.NoSuchThing
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({"after_import": after_import, "names": len(names), "missing": missing,
                  "providers": pollkit.providers.MagicHour.__name__,
                  "in_dir": sorted(set(pollkit.__all__) - set(dir(pollkit)))}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["after_import"] == []
    assert report["names"] == len(pollkit.__all__)
    assert report["missing"] == "module 'pollkit' has no attribute 'NoSuchThing'"
    assert report["providers"] == "MagicHour"
    assert report["in_dir"] == []

    command = """
import sys
from pollkit.cli import main
try:
    main(["download", "--help"])
except SystemExit:
    pass
modules = ("aiohttp.web", "pollkit.batch.journal._sqlite", "pollkit.sim", "pollkit.client._async")
print(",".join(m for m in modules if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == ""


PUBLIC_SUBMODULES = [
    "pollkit.cli",
    "pollkit.download",
    "pollkit.providers",
    "pollkit.sim",
    "pollkit.testing.pytest_plugin",
]


@pytest.mark.parametrize("name", PUBLIC_SUBMODULES)
def test_public_submodules_export_sorted_documented_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported)
    for attribute in exported:
        value = getattr(module, attribute)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attribute} has no docstring"


def test_every_other_module_is_private() -> None:
    # Packages are namespaces (their __init__ only documents the part, or re-exports); a module
    # file is public only when listed, else its name starts with an underscore.
    root = Path(pollkit.__file__).parent
    allowed = ("pollkit.core.", "pollkit.providers.", "pollkit.cli.")  # used by name
    floor = {"pollkit.errors", "pollkit.models", "pollkit.policies"}  # the value types
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "__init__.py" or path.name.startswith("_"):
            continue
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        if name in floor or name in PUBLIC_SUBMODULES or name.startswith(allowed):
            continue
        offenders.append(name)
    assert offenders == []
