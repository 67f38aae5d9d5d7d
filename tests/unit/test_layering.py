"""The architecture's rules, checked on the imports of every module (DESIGN.md's "never does").

Imports under ``if TYPE_CHECKING:`` do not count: they load nothing at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pollkit"

# The only modules that speak aiohttp's client API: one place maps its errors, owns timeouts
# and retries, so an aiohttp upgrade touches nothing else.
TRANSPORT = ("pollkit.transport",)
# Servers (aiohttp.web): the webhook receiver and the simulator.
SERVERS = ("pollkit.push._webhooks", "pollkit.sim")
# The value types at the floor, which everything may import and which import nothing above.
FLOOR = ("pollkit.models", "pollkit.errors", "pollkit.policies")
# What the simulator shares with the client side.
SIM_SHARES = (*FLOOR, "pollkit._aio", "pollkit._loopthread", "pollkit.sim")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def run_time_imports(node: ast.AST) -> Iterator[str]:
    """The modules a module imports at run time (the `from` module, or each `import`ed one)."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for child in node.orelse:
            yield from run_time_imports(child)
        return
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "aiohttp" and all(a.name == "web" for a in node.names):
            yield "aiohttp.web"
        else:
            yield node.module
    for child in ast.iter_child_nodes(node):
        yield from run_time_imports(child)


IMPORTS = {
    module_name(path): sorted(set(run_time_imports(ast.parse(path.read_text()))))
    for path in sorted(PACKAGE.rglob("*.py"))
}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(rule: object) -> list[str]:
    found = []
    for module, imports in IMPORTS.items():
        for imported in imports:
            if rule(module, imported):  # type: ignore[operator]
                found.append(f"{module} imports {imported}")
    return found


def test_the_rules_see_the_package() -> None:
    assert len(IMPORTS) > 50
    assert "aiohttp" in IMPORTS["pollkit.transport._http"]


def test_only_the_transport_speaks_aiohttp_client() -> None:
    def rule(module: str, imported: str) -> bool:
        if imported == "aiohttp.web" or imported.startswith("aiohttp.web_"):
            return not within(module, SERVERS)
        return within(imported, ("aiohttp",)) and not within(module, (*TRANSPORT, *SERVERS))

    assert offenders(rule) == []


@pytest.mark.parametrize(
    "never", ["aiohttp", "asyncio", "tqdm", "pollkit.transport", "pollkit.client"]
)
def test_core_and_providers_do_no_io(never: str) -> None:
    def rule(module: str, imported: str) -> bool:
        return within(module, ("pollkit.core", "pollkit.providers")) and within(imported, (never,))

    assert offenders(rule) == []


@pytest.mark.parametrize(
    "part",
    ["pollkit.batch", "pollkit.download", "pollkit.push", "pollkit.transport", "pollkit.display"],
)
def test_the_parts_below_the_client_never_import_it(part: str) -> None:
    # cli -> cluster -> client -> batch, download, push -> transport, providers, core, display
    # -> floor
    def rule(module: str, imported: str) -> bool:
        return within(module, (part,)) and within(imported, ("pollkit.client", "pollkit.cli"))

    assert offenders(rule) == []


@pytest.mark.parametrize(
    "part",
    [
        "pollkit.client",
        "pollkit.batch",
        "pollkit.download",
        "pollkit.push",
        "pollkit.transport",
        "pollkit.display",
    ],
)
def test_only_the_cli_imports_the_cluster(part: str) -> None:
    # cli -> cluster -> client: Dask stays an extra that nothing below the cluster needs.
    def rule(module: str, imported: str) -> bool:
        return within(module, (part,)) and within(imported, ("pollkit.cluster",))

    assert offenders(rule) == []


def test_the_cluster_never_imports_the_cli() -> None:
    def rule(module: str, imported: str) -> bool:
        return within(module, ("pollkit.cluster",)) and within(imported, ("pollkit.cli",))

    assert offenders(rule) == []
    assert "pollkit.client._async" in IMPORTS["pollkit.cluster._plugin"]
    assert "pollkit.cluster" in IMPORTS["pollkit.cli.run"]


def test_the_floor_imports_nothing_above_it() -> None:
    def rule(module: str, imported: str) -> bool:
        pollkit_import = within(imported, ("pollkit",)) and imported != "pollkit"
        return within(module, FLOOR) and pollkit_import and not within(imported, FLOOR)

    assert offenders(rule) == []


def test_the_simulator_shares_only_the_floor_and_the_loop_helpers() -> None:
    def rule(module: str, imported: str) -> bool:
        pollkit_import = within(imported, ("pollkit",)) and imported != "pollkit"
        return (
            within(module, ("pollkit.sim",)) and pollkit_import and not within(imported, SIM_SHARES)
        )

    assert offenders(rule) == []
