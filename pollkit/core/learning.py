"""What the cadence learns about job durations, and the poll schedule it solves from them.

Durations come from three places, best first: jobs of this run (finished ones, and the ages
of the running ones, which say "longer than this" and keep a batch's first quick finishes from
making every job look quick), jobs of earlier runs (kept per provider and kind in a small cache
file by the client, see `pollkit.client._duration_cache`), and, before anything was learned, a
documented prior per provider and kind (`PRIORS`). From them `solve_for` builds a survival
curve (Kaplan–Meier, with a log-normal tail past what was observed) and solves the cheapest
poll schedule that meets the lag targets (`pollkit.core.schedule`): the cadence then polls a job
at the schedule's ages, honours Retry-After, wakes early on an ETA, and past the schedule's end
falls back to its backoff, capped at `Cadence.maximum`.

Pure: times are passed in; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist

from pollkit.core.cadence import PollHints, capped_growth
from pollkit.core.schedule import (
    LagTarget,
    PollSchedule,
    kaplan_meier,
    lognormal_sigma,
    lognormal_survival,
    solve_schedule,
    timeline,
)
from pollkit.policies import Cadence

__all__ = [
    "PRIORS",
    "Learner",
    "Prior",
    "duration_between",
    "duration_group",
    "lag_targets",
    "prior_for",
    "schedule_delay",
    "solve_for",
]


@dataclass(frozen=True, slots=True)
class Prior:
    """A log-normal guess of a job's duration (seconds from submission to its end)."""

    median: float
    p95: float

    @property
    def sigma(self) -> float:
        """The spread: the standard deviation of the log-duration (near 0 when p95 = median)."""
        return lognormal_sigma(self.median, self.p95)


#: What pollkit assumes before it has seen a job of a kind end. Magic Hour's images take
#: seconds to tens of seconds, its videos minutes; Pixy's items and PiXYZ's jobs vary with the
#: model or the file. Guesses on purpose on the wide side: the first jobs that end replace them.
PRIORS: Mapping[tuple[str, str | None], Prior] = {
    ("magichour", "image"): Prior(median=10.0, p95=40.0),
    ("magichour", "video"): Prior(median=90.0, p95=360.0),
    ("pixy", None): Prior(median=20.0, p95=120.0),
    ("pixyz", None): Prior(median=30.0, p95=300.0),
    ("flux0", None): Prior(median=10.0, p95=60.0),
}
_FALLBACK = Prior(median=20.0, p95=120.0)

# Spec fields that change how long a job takes (video length, image count…): the cache keeps
# durations per bucket of them, never the spec's text.
_DURATION_FIELDS = ("image_count", "end_seconds", "duration", "seconds", "num_frames", "frames")


def prior_for(provider: str, kind: str | None, cadence: Cadence | None = None) -> Prior:
    """The documented prior of a provider's kind (its provider-wide one, else a wide default).

    With a `cadence`, the prior is read in its units: `PRIORS` are for the default
    ``initial=1`` s, and a cadence of ``initial=0.01`` (jobs a hundred times quicker, a
    simulator's time scale) reads them a hundred times shorter, as it does the lag targets.
    """
    found = PRIORS.get((provider, kind)) or PRIORS.get((provider, None)) or _FALLBACK
    if cadence is None or cadence.initial == 1.0:
        return found
    return Prior(median=found.median * cadence.initial, p95=found.p95 * cadence.initial)


def duration_group(
    provider: str, kind: str | None, spec: Mapping[str, object] | None = None
) -> str:
    """The group a job's duration is learned in: provider, kind and, from the spec, the
    bucketed numbers that change a duration (``magichour:video:end_seconds=8``).

    Only those numbers are kept (rounded up to a power of two past 8): never a prompt, a file
    name or any other text of the spec.
    """
    group = f"{provider}:{kind or '-'}"
    if not spec:
        return group
    parts = []
    for name in _DURATION_FIELDS:
        value = spec.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            number = math.ceil(value)
            bucket = number if number <= 8 else 2 ** math.ceil(math.log2(number))
            parts.append(f"{name}={bucket}")
    return ":".join([group, *parts])


def lag_targets(cadence: Cadence, samples: int = 1000) -> tuple[LagTarget, LagTarget]:
    """The lags the schedule aims at, in the cadence's units: the 1 s and 3 s targets at the
    default ``initial=1``, with margins for what the schedule does not see.

    - A job is handed over some tens of milliseconds after the poll that saw it end: the
      second target's lag is 2.8 × `initial` (it costs little in the sparse tail). The
      first's stays `initial`: on the grid of `initial` / 5 the next lag down is 0.8 s, a
      fifth more polls at the peak of finishes.
    - The distribution is known from `samples` durations: the shares are raised by
      m = 0.05·√(1000 / samples), about three standard errors of a share learned from them,
      and the second's by m / 4 (m = 0.05 from a full cache: 55 % within `initial`, 96.25 %
      within 2.8 × `initial`; from 40 durations: 75 % and 98 %). The few percent of jobs
      that end before the first poll, late by more than 3 s, are the ones the second target
      is most sensitive to, and the least sampled.
    """
    margin = min(0.05 * math.sqrt(1000 / max(samples, 1)), 0.3)
    return (
        LagTarget(1.0 * cadence.initial, 0.5 + margin),
        LagTarget(2.8 * cadence.initial, min(0.95 + margin / 4, 0.98)),
    )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def solve_for(
    finished: Sequence[float],
    running: Sequence[float],
    prior: Prior,
    cadence: Cadence,
    *,
    min_samples: int = 5,
    done: Sequence[float] = (),
    complete: Sequence[float] = (),
) -> PollSchedule:
    """The poll schedule for jobs like these, from what was learned (or the prior).

    Args:
        finished: Durations of comparable jobs that ended (this run's and earlier runs').
        running: Ages of comparable jobs still running in this run.
        prior: Used while fewer than `min_samples` durations are known. While jobs still
            run, it (or `complete`) gives the tail past what was observed only its spread:
            its scale follows the jobs watched (`_scaled`), so that jobs slower than it
            (durations that shifted since) are still inside the schedule.
        cadence: Its `initial` scales the lag targets and the grid; its `maximum` is the
            longest wait between two polls.
        min_samples: Durations needed before they, not the prior, shape the tail.
        complete: Durations of earlier runs (none censored): with `min_samples` of them, they
            shape the tail instead of the prior.
        done: Poll ages every running job has passed already (the earlier schedule's): the
            new schedule keeps them and chooses only what comes after.

    Returns:
        Poll ages in seconds from submission.
    """
    whole = finished if not running else complete
    if len(whole) >= min_samples:
        median = _quantile(whole, 0.5)
        shape = Prior(median=max(median, 1e-3), p95=max(_quantile(whole, 0.95), median))
    else:
        # Durations seen while comparable jobs still run are the quick ones: the tail past
        # them follows the prior's shape (conditioned on the ages reached), not theirs.
        shape = prior
    if running:
        # …its spread, at the scale of the jobs running now (slower than earlier runs', or
        # than the prior says, the tail and the horizon stretch with them).
        shape = _scaled(shape, finished, running, min_samples)
    observed = max([*finished, *running], default=0.0)
    far = shape.median * math.exp(2.33 * shape.sigma)  # the log-normal's 99th percentile
    horizon = max(far, 1.25 * observed, 4 * cadence.initial)
    if cadence.timeout is not None:
        horizon = min(horizon, cadence.timeout)
    # A step of a fifth of `initial` resolves the lag targets; no more than 400 steps, and
    # waits of at most 32 steps inside the schedule, keep a solve well under a second on a
    # loaded core (long jobs get a coarser grid and longer lags; past the schedule, backoff).
    # Coarser steps are a quarter of `initial` doubled: whole divisors of the first target's
    # lag, which a step of 0.4 × `initial` would round down to 0.8 (a fifth more polls).
    # Doubling keeps the grids of successive solves aligned: the same poll ages.
    step = cadence.initial / 5
    if horizon / step > 400:
        step = cadence.initial / 4
    while horizon / step > 400:
        step *= 2

    tail = lognormal_survival(shape.median, shape.p95, step=step, horizon=horizon)
    survival = kaplan_meier(finished, running, step=step, tail=tail, min_at_risk=min_samples)
    schedule = solve_schedule(
        survival,
        step=step,
        targets=lag_targets(cadence, len(finished)),
        max_gap=min(cadence.maximum, 32 * step),
        rounds=5,
        done=done,
    )
    return replace(schedule, survival=tuple(survival), step=step)


def _scaled(shape: Prior, finished: Sequence[float], running: Sequence[float], least: int) -> Prior:
    """`shape` moved in scale (its spread kept) to agree with the Kaplan–Meier estimate at
    the oldest age still observed (`least` jobs, ended or running, at least that old), which
    is where `kaplan_meier` hands over to the tail; `shape` itself while fewer than `least`
    jobs ended by then."""
    ages = sorted([*finished, *running])
    if len(ages) < least:
        return shape
    age = ages[len(ages) - least]
    if age <= 0 or sum(d <= age for d in finished) < least:
        return shape
    ended, _ = _share_ended(finished, running, age)
    if not 0.0 < ended < 1.0:
        return shape
    median = age * math.exp(-shape.sigma * NormalDist().inv_cdf(ended))
    return Prior(median=median, p95=median * shape.p95 / shape.median)


def schedule_delay(
    cadence: Cadence,
    schedule: PollSchedule,
    *,
    age: float,
    hints: PollHints | None = None,
    rand: float = 0.5,
    elapsed: float | None = None,
) -> float | None:
    """The wait before the next poll of a job of `age` seconds, or None past its deadline.

    The next of the schedule's ages; past its last one (a job slower than anything learned),
    the cadence's backoff from `initial`, growing by `multiplier` each `maximum`… up to
    `maximum`, so even an outlier is polled at least every `maximum` seconds. An ETA from the
    API brings the poll forward; a Retry-After pushes it back; the deadline is never passed.

    Args:
        cadence: The policy.
        schedule: The poll ages.
        age: Seconds since the job was submitted.
        hints: Server hints from the last reply.
        rand: Uniform in [0, 1): jitter, applied past the schedule only (the schedule's ages
            already differ between jobs submitted at different times).
        elapsed: Seconds since the wait began, which the deadline counts from (default: the
            job's age: a batch's deadline counts from the submission).
    """
    waited = age if elapsed is None else elapsed
    if cadence.timeout is not None and waited >= cadence.timeout:
        return None
    hints = hints or PollHints()
    target = schedule.next_after(age + 1e-6)
    if target is not None:
        delay = target - age
    else:
        end = schedule.times[-1] if schedule.times else 0.0
        # Steps of backoff since the schedule ended: the later, the longer the wait.
        steps = 0 if age <= end else int(math.log1p((age - end) / cadence.initial) * 2)
        base = capped_growth(cadence.initial, cadence.multiplier, steps, cadence.maximum)
        delay = base * (1 + cadence.jitter * (2 * rand - 1))
    delay = min(delay, cadence.maximum)
    if hints.eta_seconds is not None and hints.eta_seconds >= 0:
        delay = min(delay, max(hints.eta_seconds, cadence.initial))
    if hints.retry_after is not None:
        delay = max(delay, hints.retry_after)
    if cadence.timeout is not None:
        delay = min(delay, cadence.timeout - waited)
    return max(delay, 0.0)


def duration_between(
    schedule: PollSchedule | None, low: float, high: float, rand: float = 0.5
) -> float:
    """A duration for a job seen running at age `low` and ended by age `high`: drawn from the
    distribution `schedule` was solved for (`PollSchedule.ended_between`), or the middle of
    the two while no schedule is known."""
    if schedule is None:
        return (low + high) / 2
    return schedule.ended_between(low, high, rand)


def _share_ended(
    finished: Sequence[float], running: Sequence[float], age: float
) -> tuple[float, float]:
    """Kaplan–Meier estimate of the share of jobs ended by `age`, and its variance
    (Greenwood's formula: few jobs observed that far, a wide error)."""
    events = timeline(finished, running)
    at_risk = len(events)
    survival = 1.0
    spread = 0.0
    for moment, ended in events:
        if moment > age or at_risk == 0:
            break
        if ended:
            survival *= 1.0 - 1.0 / at_risk
            spread += 1.0 / (at_risk * (at_risk - 1)) if at_risk > 1 else 1.0
        at_risk -= 1
    return 1.0 - survival, survival * survival * spread


def _shifted(
    recent: Sequence[float],
    recent_running: Sequence[float],
    reference: Sequence[float],
    reference_running: Sequence[float],
) -> bool:
    """Whether the latest jobs' durations differ from the reference's beyond chance.

    Compares the share of each that ended by the reference's median duration (or by a
    younger age, while fewer than a quarter of the latest jobs were watched that long): a
    z-test at 3.5 standard errors (Greenwood's, so that an age few of the
    latest jobs reached counts for little), plus 0.04 of slack for the approximations
    (durations are known only between two polls, drawn there from the distribution learned
    before). Durations doubled move that share from 0.5 to about 0.2: 40–60 of the slower
    jobs' finishes show it.
    """
    if not recent or not reference:
        return False
    # No later than the age a quarter of the latest jobs were watched to (ended, or seen
    # running; a job not yet polled tells nothing): past it, their share is not observed but
    # extrapolated (at a batch's start, a few quick finishes among a thousand young jobs
    # would look like every job being quick).
    watched = [*recent, *(age for age in recent_running if age > 0)]
    age = min(_quantile(reference, 0.5), _quantile(watched, 0.75))
    mine, mine_variance = _share_ended(recent, recent_running, age)
    theirs, their_variance = _share_ended(reference, reference_running, age)
    floor = 0.01 / (len(recent) + len(recent_running))  # a share of 0 or 1 is not certain
    error = math.sqrt(mine_variance + their_variance + floor)
    return abs(mine - theirs) > 3.5 * error + 0.04


@dataclass(slots=True)
class _Group:
    finished: list[tuple[float, float]] = field(default_factory=list)  # (submitted, seconds)
    schedule: PollSchedule | None = None
    solved_at: int = -1  # finishes counted when the schedule was solved
    shifted: bool = False  # the last inputs were the latest jobs alone
    solved_shifted: bool = False  # ...when the schedule was solved
    checked: int = 0  # finishes when a shift was last looked for
    solved_from: tuple[float, ...] | None = None  # the durations alone it was solved from


class Learner:
    """One run's view of durations: its own finishes, the samples of earlier runs, the
    schedules solved from them, and when a schedule is due to be solved again.

    Args:
        earlier: Durations of earlier runs per group (sorted or not), e.g. the cache's.
        window: When the most recently submitted jobs holding this many finishes (and the
            running jobs among them) no longer look like the rest, the schedule is solved
            from them alone: a shift of durations is followed within a few dozen finishes.
        min_samples: Finishes needed before they replace the prior.
    """

    def __init__(
        self,
        earlier: Mapping[str, Sequence[float]] | None = None,
        *,
        window: int = 64,
        min_samples: int = 5,
    ) -> None:
        self.earlier = {group: list(values) for group, values in (earlier or {}).items()}
        self.window = window
        self.min_samples = min_samples
        self._groups: dict[str, _Group] = {}

    def finish(self, group: str, submitted: float, seconds: float) -> None:
        """A job of `group` submitted at `submitted` (any clock) ended after `seconds`."""
        self._groups.setdefault(group, _Group()).finished.append((submitted, seconds))

    def known(self, group: str) -> int:
        """Durations known for `group`: this run's and earlier runs'."""
        found = self._groups.get(group)
        return len(self.earlier.get(group, [])) + (len(found.finished) if found else 0)

    def schedule(self, group: str) -> PollSchedule | None:
        """The schedule last solved for `group`."""
        found = self._groups.get(group)
        return found.schedule if found else None

    def due(self, group: str) -> bool:
        """Whether `group`'s schedule should be solved (again): never solved, or the finishes
        grew by half (at least three) since: each new schedule moves polls, and a job whose
        polls move may be polled once more."""
        found = self._groups.get(group)
        if found is None or found.schedule is None:
            return True
        count = len(found.finished)
        return count - found.solved_at >= max(3, found.solved_at // 2)

    def inputs(
        self, group: str, running: Sequence[tuple[float, float]]
    ) -> tuple[list[float], list[float], int]:
        """What to solve from: durations, running ages, and the finish count they reflect.

        Args:
            group: The group.
            running: ``(submitted, age)`` of this run's running jobs of the group.
        """
        found = self._groups.setdefault(group, _Group())
        mine = sorted(found.finished, reverse=True)  # most recently submitted first
        count = len(mine)
        everything = [seconds for _, seconds in mine]
        all_ages = [age for _, age in running]
        earlier = self.earlier.get(group, [])
        if count >= self.window:
            cohort = mine[: self.window]
            since = cohort[-1][0]
            recent = [seconds for _, seconds in cohort]
            recent_ages = [age for submitted, age in running if submitted >= since]
            older = [seconds for _, seconds in mine[self.window :]]
            older_ages = [age for submitted, age in running if submitted < since]
            if _shifted(recent, recent_ages, [*older, *earlier], older_ages):
                # The latest jobs no longer look like the rest: learn from them alone.
                found.shifted = True
                return recent, recent_ages, count
        found.shifted = False
        if len(earlier) >= 4 * self.window and not _shifted(everything, all_ages, earlier, []):
            # Earlier runs know this distribution better than this run's first finishes do,
            # and solving again from the same samples gives the same schedule: no poll moves.
            return list(earlier), [], count
        # One distribution: this run's jobs (the running ones censored) and earlier runs'.
        return [*everything, *earlier], all_ages, count

    def shifted(self, group: str) -> bool:
        """Whether the last `inputs` of `group` found its latest jobs unlike the rest."""
        found = self._groups.get(group)
        return found is not None and found.shifted

    def store(
        self,
        group: str,
        schedule: PollSchedule,
        count: int,
        source: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        """Keep a schedule solved from the inputs that reflected `count` finishes.

        Args:
            source: The ``(durations, running ages)`` it was solved from, when they are known:
                see `unchanged`.
        """
        found = self._groups.setdefault(group, _Group())
        found.schedule, found.solved_at = schedule, count
        found.solved_shifted = found.shifted
        found.solved_from = tuple(source[0]) if source is not None and not source[1] else None

    def unchanged(self, group: str, finished: Sequence[float], running: Sequence[float]) -> bool:
        """Whether a solve from these inputs would only repeat the schedule held: it was
        solved from the same durations, and no running job is censored in either (a warm
        cache that this run's jobs have not moved). Each solve costs a core for about half a
        second, which a batch's polls would wait behind."""
        found = self._groups.get(group)
        return (
            found is not None
            and found.solved_from is not None
            and not running
            and found.solved_from == tuple(finished)
        )

    def moved(self, group: str, running: Sequence[tuple[float, float]]) -> bool:
        """Whether the latest jobs now look (un)like the rest when the schedule was solved
        otherwise: a shift began (or ended), and the schedule should follow it now rather
        than at the next growth of the finishes. Worth checking at each `checkpoint`.
        """
        found = self._groups.get(group)
        if found is None or found.schedule is None:
            return False
        self.inputs(group, running)
        return found.shifted != found.solved_shifted

    def checkpoint(self, group: str) -> bool:
        """Whether to check for a shift now: every eighth of a window of finishes, past one."""
        found = self._groups.get(group)
        if found is None or len(found.finished) < self.window:
            return False
        if len(found.finished) - found.checked < max(1, self.window // 8):
            return False
        found.checked = len(found.finished)
        return True
