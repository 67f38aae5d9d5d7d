"""Scenario validation and the named scenarios."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from pollkit.sim import SCENARIOS, Scenario


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
