"""Fixtures for the simulator's tests: a running simulator and an authenticated session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from pollkit.sim import Scenario, Simulator
from tests.e2e.sim.helpers import MANUAL


@pytest.fixture
def scenario() -> Scenario:
    """The scenario of the `sim` fixture; override it in a module to change it."""
    return MANUAL


@pytest.fixture
async def sim(scenario: Scenario) -> AsyncIterator[Simulator]:
    """A running simulator."""
    async with Simulator(scenario, api_key="mhk_test_key") as simulator:
        yield simulator


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session against `sim` that sends the right API key."""
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session
