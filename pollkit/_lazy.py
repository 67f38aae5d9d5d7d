"""Package attributes imported on first use (PEP 562).

`import pollkit` used to import every module it exports: aiohttp's server side for the webhook
receiver, every provider's models, the journal, the notebook helpers. A command that needs a
fraction of that (``pollkit download``) loaded the rest on every run: 0.03-0.04 s and ~4 MB of
RSS with cached bytecode (benchmarks/README.md, "Download experiments").
A package's ``__init__`` now names where each export lives, and the module is imported when the
name is first read; type checkers see ordinary imports under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, namespace: dict[str, Any], sources: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of `package`, whose names come from `sources`
    (module path → the names it exports). A name, once imported, is kept in `namespace` (the
    package's globals), so each is looked up here only once."""
    where = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
            # A subpackage, as `pollkit.providers` was when everything was imported at once.
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
