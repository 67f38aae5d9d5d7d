"""Scenario validation and the named scenarios."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pydantic
import pytest

from pollkit.sim import SCENARIOS, Scenario, SimClock
from pollkit.sim._scenario import LogNormal
from pollkit.sim._state import SimState


def test_defaults_match_the_contract() -> None:
    scenario = Scenario()
    assert scenario.seed == 0
    assert scenario.time_scale == 1.0
    assert scenario.queue_delay == (1.0, 3.0)
    assert scenario.render_time == (5.0, 20.0)
    assert scenario.url_ttl == 86400.0
    assert scenario.image_size == (256, 256)
    assert scenario.video_bytes == 256 * 1024
    assert scenario.deleted_read == "disabled"
    assert scenario.basename == "per_project"


def test_download_switches_default_to_off() -> None:
    scenario = Scenario()
    assert (scenario.truncate_rate, scenario.reset_rate, scenario.stall_rate) == (0, 0, 0)
    assert scenario.stall_seconds == 0
    assert scenario.range_support is True
    assert scenario.etag_changes is False
    assert scenario.bandwidth is None


def test_a_single_number_is_a_constant_duration() -> None:
    scenario = Scenario(queue_delay=2, render_time=0.5)
    assert scenario.queue_delay == (2.0, 2.0)
    assert scenario.render_time == (0.5, 0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate", -0.1),
        ("failure_rate", 1.5),
        ("cancel_rate", -1),
        ("http_error_rate", 2),
        ("rate_limit_rate", -0.01),
        ("time_scale", 0),
        ("url_ttl", -5),
        ("queue_delay", -1),
        ("render_time", (5, 1)),
        ("video_bytes", 10),
        ("image_size", (0, 10)),
        ("deleted_read", "gone"),
        ("basename", "random"),
        ("truncate_rate", 1.5),
        ("reset_rate", -0.1),
        ("stall_rate", 2),
        ("stall_seconds", -1),
        ("stall_seconds", float("inf")),
        ("bandwidth", 0),
        ("bandwidth", -5),
        ("colour", "blue"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        Scenario(**{field: value})


def test_rates_that_cannot_add_up_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="failure_rate \\+ cancel_rate"):
        Scenario(failure_rate=0.6, cancel_rate=0.6)
    with pytest.raises(pydantic.ValidationError, match="http_error_rate \\+ rate_limit_rate"):
        Scenario(http_error_rate=0.6, rate_limit_rate=0.6)
    with pytest.raises(pydantic.ValidationError, match="truncate_rate \\+ reset_rate"):
        Scenario(truncate_rate=0.5, reset_rate=0.3, stall_rate=0.3)


def test_scenarios_are_frozen_and_replace_validates() -> None:
    scenario = SCENARIOS["fast"]
    with pytest.raises(pydantic.ValidationError):
        scenario.seed = 3  # type: ignore[misc]  # frozen on purpose
    assert scenario.replace(seed=3).seed == 3
    with pytest.raises(pydantic.ValidationError):
        scenario.replace(failure_rate=-1)


def test_named_scenarios() -> None:
    assert {"default", "fast", "demo", "flaky"} <= set(SCENARIOS)
    assert SCENARIOS["fast"].time_scale == 1000
    demo = SCENARIOS["demo"]
    assert isinstance(demo.queue_delay, tuple)
    assert isinstance(demo.render_time, tuple)
    low = (demo.queue_delay[0] + demo.render_time[0]) / demo.time_scale
    high = (demo.queue_delay[1] + demo.render_time[1]) / demo.time_scale
    # About 1–4 real seconds per job.
    assert low >= 0.5
    assert high <= 5
    assert 0.1 <= demo.failure_rate <= 0.2
    flaky = SCENARIOS["flaky"]
    assert flaky.time_scale == 1000
    assert flaky.http_error_rate == pytest.approx(0.05)
    assert flaky.rate_limit_rate == pytest.approx(0.03)
    downloads = SCENARIOS["downloads-flaky"]
    assert downloads.time_scale == 1000
    assert downloads.truncate_rate == pytest.approx(0.05)
    assert downloads.reset_rate == pytest.approx(0.02)
    assert downloads.stall_rate == pytest.approx(0.02)
    assert downloads.stall_seconds == 2
    assert downloads.etag_changes is False
    assert downloads.range_support is True
    batch = SCENARIOS["batch"]
    assert batch.time_scale == 1
    assert batch.queue_delay == (0.5, 2.0)
    assert batch.render_time == LogNormal(median=8.0, p95=30.0, maximum=60.0)
    assert batch.image_size == (64, 64)
    assert batch.video_bytes == 64 * 1024
    assert batch.failure_rate == batch.cancel_rate == 0
    long = SCENARIOS["long"]
    assert long.time_scale == 1
    assert isinstance(long.render_time, tuple)
    assert long.render_time[0] >= 600  # nothing finishes within a benchmark's window


def _durations(scenario: Scenario, count: int) -> tuple[list[float], list[float]]:
    state = SimState(scenario, SimClock(scenario.time_scale), "key")
    jobs = [
        state.create_job(
            dialect="magichour", kind="image", type_="AI_IMAGE", outputs=[], details={}
        )
        for _ in range(count)
    ]
    return [j.queue_delay for j in jobs], [j.render_time for j in jobs]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def test_lognormal_durations_have_the_configured_median_and_p95() -> None:
    scenario = Scenario(seed=7, render_time=LogNormal(median=8.0, p95=30.0))
    _, renders = _durations(scenario, 20_000)
    assert statistics.median(renders) == pytest.approx(8.0, rel=0.1)
    assert _quantile(renders, 0.95) == pytest.approx(30.0, rel=0.1)
    assert min(renders) > 0


def test_lognormal_maximum_truncates_the_tail() -> None:
    duration = LogNormal(median=8.0, p95=30.0, maximum=60.0)
    _, renders = _durations(Scenario(seed=7, render_time=duration), 20_000)
    assert max(renders) <= 60.0
    assert renders.count(max(renders)) == 1  # truncated, not clamped: nothing piles up at 60
    assert statistics.median(renders) == pytest.approx(8.0, rel=0.1)
    assert _quantile(renders, 0.95) == pytest.approx(30.0, rel=0.1)


def test_lognormal_quantiles() -> None:
    duration = LogNormal(median=8.0, p95=30.0)
    assert duration.quantile(0.5) == pytest.approx(8.0)
    assert duration.quantile(0.95) == pytest.approx(30.0)
    assert LogNormal(median=8.0, p95=30.0, maximum=60.0).quantile(0.999999) <= 60.0
    assert LogNormal(median=4.0, p95=4.0).quantile(0.99) == 4.0
    for share in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            duration.quantile(share)


def test_lognormal_sigma_follows_median_and_p95() -> None:
    duration = LogNormal(median=8.0, p95=30.0)
    assert duration.mu == pytest.approx(math.log(8.0))
    assert duration.sigma == pytest.approx(math.log(30.0 / 8.0) / 1.645, rel=1e-3)
    assert LogNormal(median=4.0, p95=4.0).sigma == 0


def test_lognormal_draws_are_seeded() -> None:
    scenario = Scenario(seed=3, queue_delay={"lognormal": {"median": 1.0, "p95": 4.0}})
    assert _durations(scenario, 50) == _durations(scenario, 50)
    assert _durations(scenario, 50) != _durations(scenario.replace(seed=4), 50)


@pytest.mark.parametrize(
    "value",
    [
        {"lognormal": {"median": 8, "p95": 30}},
        {"median": 8, "p95": 30},
        LogNormal(median=8, p95=30),
    ],
)
def test_lognormal_forms_are_accepted(value: Any) -> None:
    assert Scenario(render_time=value).render_time == LogNormal(median=8.0, p95=30.0)


@pytest.mark.parametrize("maximum", [None, 60.0])
def test_lognormal_round_trips_through_json(maximum: float | None) -> None:
    cap = "" if maximum is None else f', "maximum": {maximum}'
    text = f'{{"seed": 2, "render_time": {{"lognormal": {{"median": 8, "p95": 30{cap}}}}}}}'
    scenario = Scenario.model_validate_json(text)
    assert scenario.render_time == LogNormal(median=8.0, p95=30.0, maximum=maximum)
    assert Scenario.model_validate_json(scenario.model_dump_json()) == scenario
    assert Scenario.model_validate(scenario.model_dump(mode="json")) == scenario
    assert scenario.replace(seed=5).render_time == scenario.render_time


@pytest.mark.parametrize(
    "value",
    [
        {"lognormal": {"median": 0, "p95": 30}},
        {"lognormal": {"median": 8, "p95": 4}},
        {"lognormal": {"median": 8}},
        {"lognormal": {"median": 8, "p95": 30, "p99": 60}},
        {"lognormal": {"median": float("inf"), "p95": float("inf")}},
        {"lognormal": {"median": 8, "p95": 30, "maximum": 4}},
        {"lognormal": {"median": 8, "p95": 30, "maximum": 0}},
    ],
)
def test_invalid_lognormals_are_rejected(value: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match="render_time"):
        Scenario(render_time=value)


def test_range_forms_are_unchanged() -> None:
    assert Scenario(render_time=[2, 4]).render_time == (2.0, 4.0)
    assert Scenario.model_validate_json('{"queue_delay": [1, 2]}').queue_delay == (1.0, 2.0)
    assert Scenario.model_validate_json('{"queue_delay": 3}').queue_delay == (3.0, 3.0)
    queues, renders = _durations(Scenario(seed=1, queue_delay=2, render_time=(5, 20)), 2_000)
    assert set(queues) == {2.0}
    assert min(renders) >= 5
    assert max(renders) <= 20
