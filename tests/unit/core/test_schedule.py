"""The poll schedule solver: known answers, the batch scenario's bound, and properties."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollkit.core.schedule import (
    LagTarget,
    PollSchedule,
    kaplan_meier,
    lognormal_survival,
    solve_schedule,
)


def _requests(survival: list[float], step: float, times: tuple[float, ...]) -> float:
    """Σₖ S(tₖ₋₁), computed here independently of the solver."""
    before = [0.0, *times[:-1]]
    return sum(survival[round(t / step)] for t in before)


def _share(survival: list[float], step: float, times: tuple[float, ...], lag: float) -> float:
    """Σₖ [F(tₖ) − F(max(tₖ₋₁, tₖ − L))] with F = 1 − S."""
    total = 0.0
    previous = 0.0
    for t in times:
        start = max(previous, t - lag)
        total += survival[round(start / step)] - survival[round(t / step)]
        previous = t
    return total


@pytest.mark.parametrize(
    ("survival", "targets", "times", "requests"),
    [
        # Every job ends at 5 s: one poll there, one request.
        ([1.0] * 10 + [0.0], (LagTarget(1.0, 0.5), LagTarget(3.0, 0.95)), (5.0,), 1.0),
        # Half end at 2 s, half at 5 s: a poll at each, the second for half of the jobs.
        (
            [1.0] * 4 + [0.5] * 6 + [0.0],
            (LagTarget(1.0, 0.5), LagTarget(3.0, 0.95)),
            (2.0, 5.0),
            1.5,
        ),
        # The same, with only "95% within 3.5 s": the poll at 2 s is not needed.
        ([1.0] * 4 + [0.5] * 6 + [0.0], (LagTarget(3.5, 0.95),), (5.0,), 1.0),
    ],
)
def test_known_schedules(
    survival: list[float],
    targets: tuple[LagTarget, ...],
    times: tuple[float, ...],
    requests: float,
) -> None:
    schedule = solve_schedule(survival, step=0.5, targets=targets)
    assert schedule.times == times
    assert schedule.requests == pytest.approx(requests, abs=1e-6)


def test_the_batch_scenarios_bound_matches_the_issues_figure() -> None:
    from benchmarks.polling_bound import bound_for, survival

    schedule = bound_for("batch", 1.0, 3.0, 0.25)
    assert schedule.requests == pytest.approx(4.93, abs=0.05)
    assert schedule.shares[0] >= 0.5
    assert schedule.shares[1] >= 0.95
    # Its shape: the first poll after 6 s, about 1 s apart at the peak, about 3 s in the tail.
    assert 5.5 <= schedule.times[0] <= 7.0
    gaps = [b - a for a, b in zip(schedule.times, schedule.times[1:], strict=False)]
    assert min(gaps[:8]) == pytest.approx(1.0, abs=0.01)
    assert max(gaps[:20]) == pytest.approx(3.0, abs=0.01)
    # The solver's own accounting agrees with the formulas of the issue.
    curve = survival("batch", step=0.25)
    assert _requests(curve, 0.25, schedule.times) == pytest.approx(schedule.requests, abs=1e-4)


def test_polls_already_made_stay_and_the_rest_still_meets_the_targets() -> None:
    curve = lognormal_survival(8.0, 30.0, step=0.25, horizon=80.0)
    free = solve_schedule(curve, step=0.25, rounds=8)
    done = (3.0, 4.0, 5.0)
    kept = solve_schedule(curve, step=0.25, rounds=8, done=done)
    assert kept.times[:3] == done
    assert kept.shares[0] >= 0.5
    assert kept.shares[1] >= 0.95
    assert kept.requests >= free.requests - 1e-9  # a constraint never makes it cheaper


def test_kaplan_meier_counts_running_jobs_as_censored() -> None:
    tail = [1.0] * 40 + [0.0]
    # 10 jobs ended at 1 s, 90 are still running at 2 s: about 90% have not ended by 1.5 s.
    with_running = kaplan_meier([1.0] * 10, [2.0] * 90, step=0.25, tail=tail)
    assert with_running[6] == pytest.approx(0.9, abs=1e-9)  # t = 1.5 s
    # Without the running jobs the same finishes would say every job ends at 1 s.
    alone = kaplan_meier([1.0] * 10, [], step=0.25, tail=tail, min_at_risk=1)
    assert alone[6] == pytest.approx(0.0, abs=1e-9)


def test_kaplan_meier_hands_the_unobserved_mass_to_the_tail() -> None:
    tail = lognormal_survival(8.0, 30.0, step=0.5, horizon=60.0)
    curve = kaplan_meier([], [2.0] * 20, step=0.5, tail=tail)
    # Nothing ended by 2 s, and past it the tail's shape, conditioned on reaching 2 s.
    assert curve[4] == 1.0
    assert curve[20] == pytest.approx(tail[20] / tail[4], rel=1e-6)
    assert curve[-1] == 0.0


@st.composite
def _survivals(draw: st.DrawFn) -> list[float]:
    size = draw(st.integers(min_value=4, max_value=60))
    drops = draw(st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size))
    total = sum(drops) or 1.0
    values, left = [], 1.0
    for drop in drops[:-1]:
        values.append(max(left, 0.0))
        left -= drop / total
    return [*values, 0.0]


@settings(max_examples=40, deadline=None)
@given(
    _survivals(),
    st.floats(0.25, 3.0),
    st.floats(0.3, 0.8),
    st.floats(1.0, 5.0),
    st.floats(0.85, 0.99),
)
def test_any_schedule_meets_its_targets_and_its_own_accounting(
    survival: list[float], lag: float, share: float, lag95: float, share95: float
) -> None:
    step = 0.25
    targets = (LagTarget(lag, share), LagTarget(lag + lag95, share95))
    schedule = solve_schedule(survival, step=step, targets=targets, rounds=6)
    times = schedule.times
    assert list(times) == sorted(set(times))
    assert times[-1] == pytest.approx((len(survival) - 1) * step)
    assert schedule.requests == pytest.approx(_requests(survival, step, times), abs=1e-6)
    for target, met in zip(targets, schedule.shares, strict=True):
        gap = max(1, math.floor(target.lag / step + 1e-9)) * step  # lags round down
        assert met == pytest.approx(_share(survival, step, times, gap), abs=1e-6)
        assert met >= target.share - 1e-9
    assert 1.0 - 1e-9 <= schedule.requests <= len(times) + 1e-9


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="end at 0"):
        solve_schedule([1.0, 0.5], step=1.0)
    with pytest.raises(ValueError, match="lag"):
        LagTarget(0.0, 0.5)
    with pytest.raises(ValueError, match="share"):
        LagTarget(1.0, 1.0)
    with pytest.raises(ValueError, match="log-normal"):
        lognormal_survival(-1.0, 2.0, step=1.0, horizon=10.0)
    assert math.isfinite(solve_schedule([1.0, 0.0], step=1.0).requests)


def test_a_job_ended_between_two_polls_is_timed_by_the_learned_distribution() -> None:
    step = 0.5
    # Nobody ends before 5 s; half by 6 s; everyone by 10 s.
    survival = [1.0] * 11 + [0.75, 0.5, 0.25, 0.2, 0.15, 0.1, 0.05, 0.02, 0.01, 0.0]
    schedule = solve_schedule(survival, step=step)
    learned = dataclasses.replace(schedule, survival=tuple(survival), step=step)
    # Ended before its first poll at 6 s: the middle would say 3 s, when nobody ends so young.
    assert schedule.ended_between(0.0, 6.0) == 3.0  # no distribution known: the middle
    times = [learned.ended_between(0.0, 6.0, rand) for rand in (0.0, 0.25, 0.5, 0.999)]
    assert all(5.0 <= t <= 6.0 for t in times)
    assert times == sorted(times)
    # Between two ages nobody ends at, or past the grid: the middle.
    assert learned.ended_between(1.0, 3.0, 0.7) == 2.0
    assert learned.ended_between(20.0, 30.0, 0.7) == 25.0


@given(
    low=st.floats(0.0, 12.0),
    width=st.floats(0.0, 6.0),
    rand=st.floats(0.0, 1.0),
)
def test_a_duration_between_two_polls_stays_between_them(
    low: float, width: float, rand: float
) -> None:
    survival = lognormal_survival(8.0, 30.0, step=0.2, horizon=60.0)
    schedule = PollSchedule((10.0, 60.0), 1.0, (0.5,), tuple(survival), 0.2)
    assert low <= schedule.ended_between(low, low + width, rand) <= low + width
