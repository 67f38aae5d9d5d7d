"""The polling bound: the fewest status requests per job any client can send for a scenario.

    .venv/bin/python -m benchmarks.polling_bound [--scenario batch] [--p50 1] [--p95 3]
        [--step 0.1] [--scale 1]

A client that knows the distribution of job durations exactly, and has no progress, no ETA and
no push, polls each job at fixed ages ``t₁ < t₂ < …`` after its submission. It sends
``Σₖ S(tₖ₋₁)`` requests per job on average, and notices a share ``Σₖ [F(tₖ) − F(max(tₖ₋₁,
tₖ − L))]`` of the jobs within ``L`` seconds of their end. The bound is the least of the first
such that the median lag is ≤ `--p50` seconds and the 95th percentile ≤ `--p95`
(`pollkit.core.schedule.solve_schedule`, a shortest path over poll ages on a grid).

A scenario's duration is its queue time plus its render time (uniform ranges or log-normals,
truncated at their maximum), convolved numerically here. The benchmarks print each client's
requests per job as a ratio to this bound (`bound_for`).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from statistics import NormalDist

from pollkit.core.schedule import LagTarget, PollSchedule, solve_schedule
from pollkit.sim._scenario import SCENARIOS, Duration, LogNormal

_POINTS = 400  # quantile points of the queue time in the convolution


def _cdf(duration: Duration, t: float) -> float:
    """P(duration ≤ t) for a uniform range or a (truncated) log-normal."""
    if isinstance(duration, LogNormal):
        if t <= 0:
            return 0.0
        if duration.sigma == 0:
            return 1.0 if t >= duration.median else 0.0
        normal = NormalDist(duration.mu, duration.sigma)
        if duration.maximum is not None:
            if t >= duration.maximum:
                return 1.0
            return normal.cdf(math.log(t)) / normal.cdf(math.log(duration.maximum))
        return normal.cdf(math.log(t))
    low, high = duration
    if high <= low:
        return 1.0 if t >= low else 0.0
    return min(max((t - low) / (high - low), 0.0), 1.0)


def _quantiles(duration: Duration, count: int) -> list[float]:
    """`count` equally likely values of `duration` (mid-quantiles)."""
    qs = [(i + 0.5) / count for i in range(count)]
    if isinstance(duration, LogNormal):
        return [duration.quantile(q) for q in qs]
    low, high = duration
    return [low + q * (high - low) for q in qs]


def _top(duration: Duration) -> float:
    if isinstance(duration, LogNormal):
        return duration.maximum or duration.quantile(0.99999)
    return duration[1]


def survival(scenario: str, *, step: float, scale: float = 1.0) -> list[float]:
    """``S(i·step)`` of the scenario's job duration (queue + render, times `scale`), the last
    grid point the longest duration possible."""
    chosen = SCENARIOS[scenario]
    queue = _quantiles(chosen.queue_delay, _POINTS)
    render = chosen.render_time
    horizon = (_top(chosen.queue_delay) + _top(render)) * scale
    count = math.ceil(horizon / step)
    out = []
    for i in range(count + 1):
        t = i * step / scale
        out.append(1.0 - sum(_cdf(render, t - q) for q in queue) / len(queue))
    out[-1] = 0.0
    return out


@functools.cache
def bound_for(
    scenario: str, p50: float = 1.0, p95: float = 3.0, step: float = 0.1, scale: float = 1.0
) -> PollSchedule:
    """The best schedule for the scenario's durations (times `scale`) and the lag targets."""
    return solve_schedule(
        survival(scenario, step=step, scale=scale),
        step=step,
        targets=(LagTarget(p50, 0.5), LagTarget(p95, 0.95)),
        max_gap=30.0 * scale,
    )


def describe(schedule: PollSchedule) -> str:
    """The schedule's shape: first poll, and the gaps between polls."""
    times = schedule.times
    gaps = [b - a for a, b in zip((0.0, *times), times, strict=False)]
    shown = ", ".join(f"{g:.1f}" for g in gaps[1:])
    return f"first poll at {times[0]:.1f} s; then gaps (s): {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="batch", choices=sorted(SCENARIOS))
    parser.add_argument("--p50", type=float, default=1.0)
    parser.add_argument("--p95", type=float, default=3.0)
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply durations by this")
    args = parser.parse_args()
    started = time.perf_counter()
    schedule = bound_for(args.scenario, args.p50, args.p95, args.step, args.scale)
    took = time.perf_counter() - started
    print(
        f"scenario {args.scenario}: at most {args.p50:g} s lag for 50%, {args.p95:g} s for 95% "
        f"of the jobs: {schedule.requests:.3f} requests per job at best "
        f"({len(schedule.times)} polls at most; shares met "
        f"{', '.join(f'{s:.3f}' for s in schedule.shares)}; solved in {took:.1f} s)"
    )
    print(describe(schedule))


if __name__ == "__main__":
    main()
