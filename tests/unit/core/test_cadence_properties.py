"""Properties of the cadence, for any policy, hints, durations and moment (hypothesis).

Whatever the inputs: no poll sooner than the policy and the server allow, none after the
deadline, and backoff within its bounds.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pollkit.core.cadence import PollHints, next_poll_delay
from pollkit.core.retry import retry_delays
from pollkit.errors import RateLimited
from pollkit.policies import Cadence, RetryPolicy

seconds = st.floats(min_value=0.001, max_value=1e5, allow_nan=False, allow_infinity=False)
maybe_seconds = st.none() | st.floats(min_value=0, max_value=1e5, allow_nan=False)
unit = st.floats(min_value=0, max_value=1, exclude_max=True, allow_nan=False)


@st.composite
def cadences(draw: st.DrawFn) -> Cadence:
    initial = draw(seconds)
    return Cadence(
        initial=initial,
        maximum=draw(st.floats(min_value=initial, max_value=max(initial, 1e5) * 2)),
        multiplier=draw(st.floats(min_value=1, max_value=10, allow_nan=False)),
        jitter=draw(st.floats(min_value=0, max_value=0.99, allow_nan=False)),
        timeout=draw(st.none() | seconds),
    )


hints_strategy = st.builds(PollHints, retry_after=maybe_seconds, eta_seconds=maybe_seconds)


def _check_bounds(cadence: Cadence, delay: float | None, elapsed: float, hints: PollHints) -> None:
    remaining = math.inf if cadence.timeout is None else cadence.timeout - elapsed
    if remaining <= 0:
        assert delay is None
        return
    assert delay is not None
    assert 0 <= delay <= remaining * (1 + 1e-9)  # never past the deadline
    floor = cadence.initial * (1 - cadence.jitter)
    if hints.retry_after is not None:
        floor = max(floor, hints.retry_after)
    assert delay >= min(floor, remaining) * (1 - 1e-9)  # never sooner than allowed
    ceiling = max(cadence.maximum * (1 + cadence.jitter), hints.retry_after or 0.0)
    assert delay <= ceiling * (1 + 1e-9)  # the backoff stays within its bounds


@given(cadences(), st.integers(min_value=1, max_value=10_000), seconds, hints_strategy, unit)
def test_next_poll_delay_respects_the_policy_the_server_and_the_deadline(
    cadence: Cadence, polls: int, elapsed: float, hints: PollHints, rand: float
) -> None:
    delay = next_poll_delay(cadence, polls=polls, elapsed=elapsed, hints=hints, rand=rand)
    _check_bounds(cadence, delay, elapsed, hints)


@given(cadences(), st.integers(min_value=1, max_value=60), seconds)
def test_without_jitter_or_hints_the_backoff_never_shrinks(
    cadence: Cadence, polls: int, elapsed: float
) -> None:
    steady = cadence.model_copy(update={"jitter": 0.0, "timeout": None})
    now = next_poll_delay(steady, polls=polls, elapsed=elapsed)
    later = next_poll_delay(steady, polls=polls + 1, elapsed=elapsed)
    assert now is not None
    assert later is not None
    assert later >= now


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    initial = draw(st.floats(min_value=0, max_value=1e4, allow_nan=False))
    return RetryPolicy(
        initial=initial,
        maximum=draw(st.floats(min_value=initial, max_value=max(initial, 1e4) * 2)),
        multiplier=draw(st.floats(min_value=1, max_value=50, allow_nan=False)),
        jitter=draw(st.floats(min_value=0, max_value=0.99, allow_nan=False)),
        jitter_seconds=draw(st.floats(min_value=0, max_value=5, allow_nan=False)),
    )


@given(retry_policies(), st.integers(min_value=1, max_value=3000), maybe_seconds, st.integers())
def test_retry_waits_stay_within_their_bounds_however_many_attempts(
    policy: RetryPolicy, attempts: int, retry_after: float | None, seed: int
) -> None:
    import random

    waits = retry_delays(policy, random.Random(seed))
    waits.send(None)
    error = RateLimited(status_code=429, retry_after=retry_after)
    floor = max(policy.initial * (1 - policy.jitter), retry_after or 0.0)
    ceiling = max(policy.maximum * (1 + policy.jitter) + policy.jitter_seconds, retry_after or 0)
    for _ in range(min(attempts, 200)):
        wait = waits.send(error)
        assert floor * (1 - 1e-9) <= wait <= ceiling * (1 + 1e-9)
