"""Shared fixtures: a clean environment for every test."""

from __future__ import annotations

import os

import pytest

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
