"""The poll cadence: growth, cap, jitter bounds, server hints and the deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from pollkit.core.cadence import PollHints, next_poll_delay
from pollkit.policies import Cadence

C = Cadence(initial=1.0, maximum=10.0, multiplier=2.0, jitter=0.0, timeout=100.0)


@pytest.mark.parametrize(
    ("polls", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0), (10_000, 10.0)],
)
def test_delay_grows_geometrically_up_to_the_maximum(polls: int, expected: float) -> None:
    assert next_poll_delay(C, polls=polls, elapsed=0.0) == pytest.approx(expected)


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_spreads_within_its_fraction(rand: float, factor: float) -> None:
    cadence = C.model_copy(update={"jitter": 0.2})
    delay = next_poll_delay(cadence, polls=3, elapsed=0.0, rand=rand)
    assert delay == pytest.approx(4.0 * factor, rel=1e-5)


def test_retry_after_is_a_floor() -> None:
    hints = PollHints(retry_after=7.5)
    assert next_poll_delay(C, polls=1, elapsed=0.0, hints=hints) == 7.5
    # A hint shorter than the cadence changes nothing.
    assert next_poll_delay(C, polls=4, elapsed=0.0, hints=PollHints(retry_after=0.1)) == 8.0


def test_eta_wakes_up_near_the_announced_end_but_not_faster_than_initial() -> None:
    assert next_poll_delay(C, polls=5, elapsed=0.0, hints=PollHints(eta_seconds=3.0)) == 3.0
    assert next_poll_delay(C, polls=5, elapsed=0.0, hints=PollHints(eta_seconds=0.01)) == 1.0


def test_last_poll_lands_on_the_deadline_then_stops() -> None:
    assert next_poll_delay(C, polls=5, elapsed=95.0) == pytest.approx(5.0)
    assert next_poll_delay(C, polls=5, elapsed=100.0) is None
    assert next_poll_delay(C, polls=5, elapsed=250.0) is None
    # Even a Retry-After cannot push a poll past the deadline.
    late = next_poll_delay(C, polls=1, elapsed=99.0, hints=PollHints(retry_after=30))
    assert late == pytest.approx(1.0)


def test_no_deadline_means_never_stop() -> None:
    forever = C.model_copy(update={"timeout": None})
    assert next_poll_delay(forever, polls=3, elapsed=1e9) == 4.0


def test_first_poll_is_not_scheduled_here() -> None:
    with pytest.raises(ValueError, match="polls must be"):
        next_poll_delay(C, polls=0, elapsed=0.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": -1}, "initial"),
        ({"maximum": 0.5, "initial": 1}, "maximum"),
        ({"multiplier": 0.9}, "multiplier"),
        ({"jitter": 1.0}, "jitter"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"every": 3}, "every"),
    ],
)
def test_invalid_cadence_is_refused_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Cadence(**kwargs)  # type: ignore[arg-type]


def test_durations_accept_timedelta() -> None:
    cadence = Cadence(initial=timedelta(milliseconds=250), timeout=timedelta(minutes=2))
    assert (cadence.initial, cadence.timeout) == (0.25, 120.0)


def test_duration_model_needs_enough_samples_and_keeps_the_recent_ones() -> None:
    from pollkit.core.cadence import DurationModel

    model = DurationModel(max_samples=4, min_samples=3)
    model.observe("mh:image", 5.0)
    model.observe("mh:image", 1.0)
    assert model.samples("mh:image") is None
    for seconds in (3.0, 9.0, 7.0):
        model.observe("mh:image", seconds)
    assert model.samples("mh:image") == [1.0, 3.0, 7.0, 9.0]  # the oldest (5.0) dropped
    assert model.samples("mh:video") is None
