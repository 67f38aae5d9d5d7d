"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.postgres import PostgresServer

# Fixtures of moto's S3 server (`s3_endpoint`, `s3`).
pytest_plugins = ["tests.s3"]

# Variables that could change a result if a developer has them set.
_PREFIXES = ("POLLKIT_", "MAGIC_HOUR_", "PIXY_", "PIXYZ_", "FLUX0_")


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in list(os.environ):
        if name.startswith(_PREFIXES):
            monkeypatch.delenv(name)
    # Durations learned by a test go to its own directory, never to the user's cache.
    monkeypatch.setenv("POLLKIT_CACHE_DIR", str(tmp_path_factory.mktemp("pollkit-cache")))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (started on first use, stopped at the end)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # not running: it failed to start
            server.stop("immediate")
        server.remove()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh database of this test's own."""
    return postgres_server.new_database()
