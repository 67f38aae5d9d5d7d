"""pollkit's pytest plugin: test your own pipeline against the embedded simulator in one line.

Installed with pollkit and registered through the ``pytest11`` entry point, so the fixtures
below exist in every test suite of a project that has pollkit installed::

    def test_my_pipeline(magichour_provider, tmp_path):
        with pollkit.Client(magichour_provider) as client:
            result = client.submit_and_check({...}, download_directory=tmp_path)
        assert result.ok

Fixtures:
    pollkit_scenario: The scenario the simulator runs (default ``"fast"``: jobs finish in
        milliseconds). Override the fixture, or mark a test
        ``@pytest.mark.pollkit_scenario("flaky")`` (a name in `pollkit.sim.SCENARIOS`, or a
        `Scenario`).
    pollkit_sim: A running `ThreadedSimulator` (works in sync and async tests alike).
    magichour_provider, pixy_provider, pixyz_provider: A `MagicHour`, `Pixy` or `Pixyz`
        provider pointed at it, with its key.

The simulator is started for each test that asks for it (it binds ``127.0.0.1:0`` and starts in
a few milliseconds), so tests never share jobs, plans or injected faults.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pollkit.providers import MagicHour, Pixy, Pixyz
from pollkit.sim import Scenario, ThreadedSimulator

__all__ = [
    "magichour_provider",
    "pixy_provider",
    "pixyz_provider",
    "pollkit_scenario",
    "pollkit_sim",
]


def pytest_configure(config: pytest.Config) -> None:
    """Declare the plugin's marker (so ``--strict-markers`` suites accept it)."""
    config.addinivalue_line(
        "markers",
        "pollkit_scenario(name_or_scenario): the scenario of the pollkit_sim fixture",
    )


@pytest.fixture
def pollkit_scenario(request: pytest.FixtureRequest) -> Scenario | str:
    """The simulator's scenario: the test's ``pollkit_scenario`` marker, else ``"fast"``."""
    marker = request.node.get_closest_marker("pollkit_scenario")
    if marker is None:
        return "fast"
    if len(marker.args) != 1 or not isinstance(marker.args[0], (str, Scenario)):
        raise pytest.UsageError("pollkit_scenario takes one scenario name or Scenario")
    chosen: Scenario | str = marker.args[0]
    return chosen


@pytest.fixture
def pollkit_sim(pollkit_scenario: Scenario | str) -> Iterator[ThreadedSimulator]:
    """A running simulator of every API pollkit speaks; stopped after the test."""
    with ThreadedSimulator(pollkit_scenario) as simulator:
        yield simulator


@pytest.fixture
def magichour_provider(pollkit_sim: ThreadedSimulator) -> MagicHour:
    """A Magic Hour provider for `pollkit_sim`."""
    return MagicHour(api_key=pollkit_sim.api_key, base_url=pollkit_sim.urls["magichour"])


@pytest.fixture
def pixy_provider(pollkit_sim: ThreadedSimulator) -> Pixy:
    """A Pixy provider for `pollkit_sim` (its key check is served there too)."""
    return Pixy(api_key=pollkit_sim.api_key, base_url=pollkit_sim.urls["pixy"])


@pytest.fixture
def pixyz_provider(pollkit_sim: ThreadedSimulator) -> Pixyz:
    """A PiXYZ Scheduler provider for `pollkit_sim`."""
    return Pixyz(api_key=pollkit_sim.api_key, base_url=pollkit_sim.urls["pixyz"])
