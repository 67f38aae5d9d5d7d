"""Warm runs in a row, without I/O: does what each run learns keep the next one on target?

    .venv/bin/python -m benchmarks.replay_warm_runs [--runs 6] [--jobs 1000] [--seed 1]
        [--midpoint]

Each run solves its schedule from the cache the run before it left (the first from durations
drawn exactly), polls `--jobs` jobs of the `batch` scenario at the schedule's ages (on time: no
latency, no burst), and leaves the durations it learned as the next run's cache: drawn between
the last two polls from the learned curve (`PollSchedule.ended_between`, what pollkit does), or
with `--midpoint` at the middle of the two (what it did before). It prints each run's requests
per job, as a ratio to the bound too, and the lags a caller would see, less the hand-over.

This isolates the learning from the machine: `bench_batch.py` measures the real thing.
"""

from __future__ import annotations

import argparse
import random

from pollkit.core.learning import prior_for, schedule_delay, solve_for
from pollkit.core.schedule import PollSchedule
from pollkit.policies import Cadence
from pollkit.sim._scenario import SCENARIOS, LogNormal

BOUND = 4.94  # benchmarks/polling_bound.py --scenario batch --p50 1 --p95 3


def draw(rng: random.Random) -> float:
    """One job's duration in the `batch` scenario: queue time plus render time."""
    scenario = SCENARIOS["batch"]
    queue, render = scenario.queue_delay, scenario.render_time
    assert isinstance(queue, tuple)
    assert isinstance(render, LogNormal)
    low, high = queue
    # The render time as the simulator draws it: a uniform share's quantile (truncation included).
    share = rng.random()
    while share == 0.0:  # the one value of [0, 1) with no quantile
        share = rng.random()
    return rng.uniform(low, high) + render.quantile(share)


def run(
    cache: list[float], rng: random.Random, jobs: int, *, midpoint: bool
) -> tuple[float, float, float, list[float], PollSchedule]:
    """(requests per job, lag p50, lag p95, the durations learned, the schedule) of a run."""
    cadence = Cadence()
    prior = prior_for("magichour", "image", cadence)
    schedule = solve_for(cache, [], prior, cadence, complete=cache)
    requests, lags, learned = 0, [], []
    for _ in range(jobs):
        duration = draw(rng)
        age = seen = 0.0
        while True:
            delay = schedule_delay(cadence, schedule, age=age)
            assert delay is not None  # no timeout in the default cadence
            age += delay
            requests += 1
            if age >= duration:
                break
            seen = age
        lags.append(age - duration)
        if midpoint:
            learned.append((seen + age) / 2)
        else:
            learned.append(schedule.ended_between(seen, age, rng.random()))
    lags.sort()
    p50, p95 = lags[len(lags) // 2], lags[int(0.95 * (len(lags) - 1))]
    return requests / jobs, p50, p95, learned, schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--midpoint", action="store_true", help="learn the middle of two polls")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cache = [draw(rng) for _ in range(args.jobs)]
    print("run  requests/job  × bound  lag p50 s  lag p95 s  first polls (s)")
    for number in range(args.runs):
        requests, p50, p95, learned, schedule = run(cache, rng, args.jobs, midpoint=args.midpoint)
        ages = ", ".join(f"{t:.1f}" for t in schedule.times[:4])
        print(
            f"{number:>3}  {requests:>12.2f}  {requests / BOUND:>7.2f}  {p50:>9.2f}  "
            f"{p95:>9.2f}  {ages}"
        )
        cache = learned


if __name__ == "__main__":
    main()
