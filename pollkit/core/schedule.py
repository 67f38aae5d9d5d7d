"""The poll schedule with the fewest requests that still notices jobs within a lag target.

A job submitted at age 0 is polled at ages ``t₁ < t₂ < …``. For a distribution of job
durations ``F`` (survival ``S = 1 − F``), the expected status requests per job are
``Σₖ S(tₖ₋₁)`` (poll *k* happens only if the job was still running at the previous one,
``t₀ = 0``), and the chance that a job is noticed within ``L`` seconds of its end is
``Σₖ [F(tₖ) − F(max(tₖ₋₁, tₖ − L))]``. Every term depends on two neighbouring polls only, so on
a grid of ages the best schedule for given Lagrange weights of the lag targets is a shortest
path (`_shortest_path`); a search over the weights (`solve_schedule`) finds the cheapest
schedule that meets every target.

Pure: no clock, no I/O. The distribution comes in as survival values on a grid
(`lognormal_survival`, `kaplan_meier`), so the same solver computes the bound in
``benchmarks/polling_bound.py`` from a scenario's exact distribution and the cadence's
schedule from the durations learned.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

__all__ = [
    "DEFAULT_TARGETS",
    "LagTarget",
    "PollSchedule",
    "kaplan_meier",
    "lognormal_sigma",
    "lognormal_survival",
    "solve_schedule",
    "timeline",
]

_Z95 = NormalDist().inv_cdf(0.95)
# A poll that costs nothing (every job has ended) still costs this: among schedules of equal
# expected requests the one with the fewest polls wins.
_TIE = 1e-7


@dataclass(frozen=True, slots=True)
class LagTarget:
    """At least `share` of the jobs are noticed within `lag` seconds of their end."""

    lag: float
    share: float

    def __post_init__(self) -> None:
        if not (self.lag > 0 and math.isfinite(self.lag)):
            raise ValueError(f"lag must be > 0 seconds, got {self.lag!r}")
        if not 0 < self.share < 1:
            raise ValueError(f"share must be between 0 and 1 (exclusive), got {self.share!r}")


#: Noticed within 1 s for half of the jobs, within 3 s for 95% of them.
DEFAULT_TARGETS = (LagTarget(1.0, 0.5), LagTarget(3.0, 0.95))


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """Ages (seconds since submission) at which to poll a job, and what they achieve.

    Attributes:
        times: Poll ages, increasing; the last one is where the distribution ends.
        requests: Expected status requests per job.
        shares: Per lag target, the share of jobs noticed within its lag.
        survival: ``S(i·step)``, the distribution it was solved for (empty: not known).
        step: The grid step of `survival`, seconds.
    """

    times: tuple[float, ...]
    requests: float
    shares: tuple[float, ...]
    survival: tuple[float, ...] = field(default=(), repr=False, compare=False)
    step: float = field(default=0.0, repr=False, compare=False)

    def next_after(self, age: float) -> float | None:
        """The first poll age strictly after `age`, or None past the last one."""
        index = bisect.bisect_right(self.times, age)
        return self.times[index] if index < len(self.times) else None

    def ended_between(self, low: float, high: float, rand: float = 0.5) -> float:
        """A duration for a job seen running at age `low` and ended at age `high`: drawn
        from the distribution the schedule was solved for, between the two (`rand` is its
        quantile there), else the middle.

        The middle biases what is learned: a job that ended before its first poll at 6 s
        would count as a 3 s job, though hardly any job ends that young, and the next solve
        would poll every job at 3 s for them.
        """
        middle = (low + high) / 2
        if not self.survival or self.step <= 0 or high <= low:
            return middle
        lower, upper = self._ended_by(low), self._ended_by(high)
        if upper - lower < 1e-9:
            return middle
        wanted = lower + min(max(rand, 0.0), 1.0) * (upper - lower)
        # The first grid point where F = 1 − S passes `wanted` (−S is non-decreasing), and
        # F linear between it and the point before.
        index = bisect.bisect_right(self.survival, wanted - 1.0, key=lambda s: -s)
        index = min(max(index, 1), len(self.survival) - 1)
        before, after = 1.0 - self.survival[index - 1], 1.0 - self.survival[index]
        part = (wanted - before) / (after - before) if after > before else 1.0
        return min(max((index - 1 + part) * self.step, low), high)

    def _ended_by(self, age: float) -> float:
        """F(age), linear between grid points (1 past the grid)."""
        where = age / self.step
        index = int(where)
        if index >= len(self.survival) - 1:
            return 1.0
        part = where - index
        below, above = self.survival[index], self.survival[index + 1]
        return 1.0 - (below + part * (above - below))


def lognormal_sigma(median: float, p95: float) -> float:
    """The standard deviation of the log-duration of a log-normal given by its median and
    95th percentile (a hair above 0 when they are equal)."""
    return max(math.log(p95 / median) / _Z95, 1e-9)


def lognormal_survival(
    median: float, p95: float, *, step: float, horizon: float, shift: float = 0.0
) -> list[float]:
    """Survival values ``S(i·step)`` for ``i = 0 … ⌈horizon/step⌉`` of ``shift`` + a log-normal
    duration given by its median and 95th percentile (the last value forced to 0).

    Raises:
        ValueError: A non-positive median, step or horizon, or ``p95 < median``.
    """
    if median <= 0 or step <= 0 or horizon <= 0 or p95 < median:
        raise ValueError(f"bad log-normal: median={median}, p95={p95}, step={step}")
    normal = NormalDist(math.log(median), lognormal_sigma(median, p95))
    count = math.ceil(horizon / step)
    out = []
    for i in range(count + 1):
        t = i * step - shift
        out.append(1.0 if t <= 0 else 1.0 - normal.cdf(math.log(t)))
    out[-1] = 0.0
    return out


def timeline(finished: Sequence[float], running: Sequence[float]) -> list[tuple[float, bool]]:
    """Ends (True) and censorings (False, a running job's age) in order of age; at one age
    the ends first, as Kaplan–Meier counts them: a job still running at that age was at risk
    when the others ended."""
    events = [(d, True) for d in finished] + [(a, False) for a in running]
    return sorted(events, key=lambda event: (event[0], not event[1]))


def kaplan_meier(
    finished: Sequence[float],
    running: Sequence[float],
    *,
    step: float,
    tail: Sequence[float],
    min_at_risk: int = 5,
) -> list[float]:
    """Survival on the grid of `tail` from observed durations, censoring included.

    `finished` are durations of jobs that ended; `running` are the ages of jobs still running
    (each says only "longer than this"). In a batch submitted at once only the quick jobs have
    ended, and their durations alone would make every job look quick: the running ones keep
    the estimate honest. Past the age where fewer than `min_at_risk` jobs remain observed, the
    estimate cannot say more, and the rest of the mass follows the shape of `tail` (a prior or
    earlier runs' survival on the same grid), conditioned on surviving that far.

    Args:
        finished: Durations of finished jobs, seconds.
        running: Ages of running jobs, seconds.
        step: Grid step of `tail`, seconds.
        tail: Survival values on the grid, the last one 0.
        min_at_risk: Jobs still observed below which the estimate hands over to `tail`.

    Returns:
        Survival values on the same grid as `tail`, non-increasing, the last one 0.
    """
    events = timeline(finished, running)
    at_risk = len(events)
    survival = 1.0
    jumps: dict[float, float] = {}  # duration → the share of jobs that ended there
    index = 0
    handover = len(tail) - 1
    for i in range(len(tail)):
        t = i * step
        while index < len(events) and events[index][0] <= t and at_risk >= min_at_risk:
            moment, ended = events[index]
            if ended:
                # Binned to half a grid step: the smoothing is wider than that anyway.
                where = round(moment / step * 2) * step / 2
                jumps[where] = jumps.get(where, 0.0) + survival / at_risk
                survival *= 1.0 - 1.0 / at_risk
            at_risk -= 1
            index += 1
        if at_risk < min_at_risk or (index >= len(events) and not running):
            handover = i
            break
    width = _bandwidth(finished)
    base = tail[handover]
    out = []
    for i in range(len(tail)):
        t = i * step
        gone = sum(mass * _smoothed(t, moment, width) for moment, mass in jumps.items())
        value = 1.0 - gone
        if i >= handover:
            # The tail's shape from here on, scaled to the mass the observations left.
            value -= survival * (1.0 - (tail[i] / base if base > 0 else 0.0))
        out.append(min(max(value, 0.0), 1.0))
    out[-1] = 0.0
    for i in range(1, len(out)):  # never increasing, whatever the rounding
        out[i] = min(out[i], out[i - 1])
    return out


def _bandwidth(durations: Sequence[float]) -> float:
    """Kernel width in log-seconds, half Silverman's rule: observed durations are smoothed
    so that a schedule is not fitted to the gaps between a few dozen samples (wider would
    flatten the peak the schedule polls densely around)."""
    logs = [math.log(d) for d in durations if d > 0]
    if len(logs) < 2:
        return 0.0
    mean = sum(logs) / len(logs)
    spread = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1))
    scale: float = float(len(logs)) ** -0.2
    return min(max(0.5 * spread * scale, 0.0), 0.5)


def _smoothed(t: float, moment: float, width: float) -> float:
    """P(a job that ended at `moment`, smoothed by `width` in log-seconds, ended by `t`)."""
    if t <= 0:
        return 0.0
    if width <= 0 or moment <= 0:
        return 1.0 if moment <= t else 0.0
    return 0.5 * (1.0 + math.erf((math.log(t) - math.log(moment)) / (width * math.sqrt(2))))


def _shortest_path(
    survival: Sequence[float],
    gaps: Sequence[int],
    weights: Sequence[float],
    max_gap: int,
    fixed: Sequence[int] = (),
) -> list[int]:
    """Grid indices of the polls minimising requests − Σ weight × share within each lag,
    starting with the `fixed` polls (those that already happened)."""
    count = len(survival)
    done = [1.0 - s for s in survival]
    best = [math.inf] * count
    best[0] = 0.0
    previous = [-1] * count
    pairs = list(zip(gaps, weights, strict=True))
    chain = [0, *fixed]
    for i, j in itertools.pairwise(chain):
        best[j] = best[i] + _edge(survival, done, pairs, i, j)
        previous[j] = i
    origin = chain[-1]
    for j in range(origin + 1, count):
        here = done[j]
        # Finishing in (tⱼ − L, tⱼ] is noticed within L: worth `weight` each.
        reach = [
            (j - gap, weight, weight * (here - done[max(j - gap, 0)])) for gap, weight in pairs
        ]
        top = math.inf
        arg = -1
        for i in range(max(origin, j - max_gap), j):
            if i < origin or (i > origin and best[i] == math.inf):
                continue
            cost = best[i] + survival[i] + _TIE
            for start, weight, full in reach:
                cost -= full if i <= start else weight * (here - done[i])
            if cost < top:
                top, arg = cost, i
        best[j], previous[j] = top, arg
    path = []
    j = count - 1
    while j > 0:
        path.append(j)
        j = previous[j]
    return path[::-1]


def _edge(
    survival: Sequence[float],
    done: Sequence[float],
    pairs: Sequence[tuple[int, float]],
    i: int,
    j: int,
) -> float:
    cost = survival[i] + _TIE
    for gap, weight in pairs:
        cost -= weight * (done[j] - done[max(i, j - gap)])
    return cost


def _evaluate(
    survival: Sequence[float], path: Sequence[int], gaps: Sequence[int]
) -> tuple[float, tuple[float, ...]]:
    requests = 0.0
    shares = [0.0] * len(gaps)
    before = 0
    for j in path:
        requests += survival[before]
        for m, gap in enumerate(gaps):
            start = max(before, j - gap)
            shares[m] += survival[start] - survival[j]
        before = j
    return requests, tuple(shares)


def _polish(
    survival: Sequence[float],
    path: list[int],
    gaps: Sequence[int],
    shares: Sequence[float],
    longest: int,
    frozen: int = 0,
) -> list[int]:
    """Local search from a feasible schedule: drop or move single polls while every target
    stays met and the requests fall (the relaxation's schedule can sit in its duality gap)."""
    end = len(survival) - 1

    def feasible(candidate: list[int]) -> float | None:
        before = 0
        for j in candidate:
            if j - before > longest:
                return None
            before = j
        requests, met = _evaluate(survival, candidate, gaps)
        ok = all(m >= s - 1e-9 for m, s in zip(met, shares, strict=True))
        return requests if ok else None

    best = feasible(path)
    assert best is not None
    improved = True
    while improved:
        improved = False
        for k in range(frozen, len(path)):
            options = [path[:k] + path[k + 1 :]] if path[k] != end else []
            for move in (-3, -2, -1, 1, 2, 3):
                moved = path[k] + move
                low = path[k - 1] if k else 0
                low = max(low, path[frozen - 1] if frozen else 0)
                high = path[k + 1] if k + 1 < len(path) else end + 1
                if low < moved < high and path[k] != end:
                    options.append([*path[:k], moved, *path[k + 1 :]])
            for candidate in options:
                cost = feasible(candidate)
                fewer = len(candidate) < len(path) and cost is not None and cost <= best + 1e-12
                if cost is not None and (cost < best - 1e-12 or fewer):
                    path, best, improved = candidate, cost, True
                    break
            if improved:
                break
    return path


def solve_schedule(
    survival: Sequence[float],
    *,
    step: float,
    targets: Sequence[LagTarget] = DEFAULT_TARGETS,
    max_gap: float = 30.0,
    rounds: int = 14,
    done: Sequence[float] = (),
) -> PollSchedule:
    """The cheapest poll schedule on the grid that meets every lag target.

    Lagrangian relaxation: for fixed weights of the targets the best schedule is a shortest
    path; the weights are searched by bisection (the weight of the last target outside, each
    earlier one inside), and the cheapest schedule seen that meets every target is kept. A
    schedule polling at every grid point meets any target a grid allows, so one always exists.

    Args:
        survival: ``S(i·step)``, non-increasing from 1 to a last value of 0: the last grid
            point is where every job has ended.
        step: Grid step, seconds; lags are rounded down to whole steps (a lag target is at
            most, and a lag of 2.8 s on a grid of 0.5 s rounded to 3 s would exceed it).
        targets: Lag targets to meet.
        max_gap: Longest wait between two polls, seconds.
        rounds: Bisection steps per weight.
        done: Polls that already happened (ages, seconds): the schedule starts with them and
            only the polls after them are chosen, for the targets over every job. Solved
            again mid-batch without them, the schedule would spend its lag budget on ages
            already past and poll the jobs still running too rarely.

    Returns:
        The schedule (poll ages in seconds).

    Raises:
        ValueError: A survival that does not end at 0, or no target.
    """
    if not targets:
        raise ValueError("at least one lag target is needed")
    if len(survival) < 2 or survival[-1] != 0.0:
        raise ValueError("survival must have ≥ 2 values and end at 0")
    gaps = [max(1, math.floor(t.lag / step + 1e-9)) for t in targets]
    longest = max(1, int(max_gap / step))
    last = len(survival) - 1
    fixed: list[int] = []
    for age in sorted(done):
        index = min(round(age / step), last - 1)
        if index > (fixed[-1] if fixed else 0):
            fixed.append(index)
    shares = [t.share for t in targets]
    found: list[tuple[float, list[int]]] = []

    def attempt(weights: list[float]) -> tuple[float, ...]:
        path = _shortest_path(survival, gaps, weights, longest, fixed)
        requests, met = _evaluate(survival, path, gaps)
        if all(m >= s - 1e-9 for m, s in zip(met, shares, strict=True)):
            found.append((requests, path))
        return met

    def search(level: int, fixed: list[float]) -> tuple[float, ...]:
        # Bisection of this level's weight (log scale), deeper levels searched at each point.
        low, high = 0.0, 1.0
        met = inner(level, [*fixed, high])
        while met[level] < shares[level] and high < 1e6:
            low, high = high, high * 4
            met = inner(level, [*fixed, high])
        for _ in range(rounds):
            middle = (low + high) / 2 if low == 0 else math.sqrt(low * high)
            met = inner(level, [*fixed, middle])
            if met[level] >= shares[level]:
                high = middle
            else:
                low = middle
        return inner(level, [*fixed, high])

    def inner(level: int, fixed: list[float]) -> tuple[float, ...]:
        if level + 1 == len(targets):
            return attempt(fixed)
        return search(level + 1, fixed)

    search(0, [])
    if not found and fixed and survival[fixed[-1]] > 0:
        # The polls already made missed the targets by more than later ones can make up: meet
        # them among the jobs still running, from the last poll made on.
        start = fixed[-1]
        rest = [value / survival[start] for value in survival[start:]]
        ahead = solve_schedule(rest, step=step, targets=targets, max_gap=max_gap, rounds=rounds)
        path = [*fixed, *(start + round(t / step) for t in ahead.times)]
        requests, met = _evaluate(survival, path, gaps)
        return PollSchedule(tuple(j * step for j in path), requests, met)
    if not found:  # weights beyond the search: poll at every grid point, the most a grid can do
        attempt([1e9] * len(targets))
    requests, path = min(found, key=lambda f: f[0])
    path = _polish(survival, path, gaps, shares, longest, len(fixed))
    requests, met = _evaluate(survival, path, gaps)
    return PollSchedule(tuple(j * step for j in path), requests, met)
