"""The batch's side of learning: when to poll a job, from the schedule solved for its group.

The decisions are pure (`pollkit.core.learning`); this module only keeps one `Learner` per run,
solves a group's schedule again in a worker thread as its jobs end (a solve takes a few tenths
of a second of CPU: never on the event loop, except the first of a group, from the prior or
earlier runs, which every job's first poll waits for), and tells the scheduler when a new
schedule is in so that waiting jobs are re-timed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from pollkit.core.cadence import DurationModel, PollHints, next_poll_delay
from pollkit.core.learning import (
    Learner,
    duration_between,
    duration_group,
    prior_for,
    schedule_delay,
    solve_for,
)
from pollkit.core.schedule import PollSchedule
from pollkit.policies import Cadence

__all__ = ["BatchLearning"]

_log = logging.getLogger("pollkit.scheduler")

Running = Callable[[str], Iterable[tuple[float, float]]]

#: Jobs of a group polled from `initial` before anything is learned (`first_delay`).
SCOUTS = 64


class BatchLearning:
    """Schedules per group for one batch.

    Args:
        provider: The provider's name.
        cadence: The batch's cadence.
        durations: The client's durations (earlier runs', from the cache); each job that
            ends here is added to them.
        running: ``(submitted, age)`` of the batch's running jobs of a group.
        on_schedule: Called (on the loop) with a group whose schedule was just solved again.
        spawn: Runs a coroutine as a task of the batch (cancelled when the batch ends).
    """

    def __init__(
        self,
        provider: str,
        cadence: Cadence,
        durations: DurationModel,
        *,
        running: Running,
        on_schedule: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.provider = provider
        self.cadence = cadence
        self.durations = durations
        self.learner = Learner(durations.export())
        self._running = running
        self._on_schedule = on_schedule
        self._spawn = spawn
        self._solving: set[str] = set()
        self._scouts: dict[str, int] = {}  # jobs polled from `initial` while nothing is learned

    def group(self, kind: str | None) -> str:
        """The group a job of `kind` learns in."""
        return duration_group(self.provider, kind)

    def _solve(self, group: str, kind: str | None) -> PollSchedule:
        finished, ages, count = self.learner.inputs(group, list(self._running(group)))
        prior = prior_for(self.provider, kind, self.cadence)
        complete = self.learner.earlier.get(group, [])
        schedule = solve_for(finished, ages, prior, self.cadence, complete=complete)
        self.learner.store(group, schedule, count, (finished, ages))
        return schedule

    def _schedule(self, kind: str | None) -> PollSchedule | None:
        """The group's schedule; None while fewer than `Learner.min_samples` durations are
        known, in this run and earlier ones (a prior alone is too rough a guess to wait by:
        jobs quicker than it would all be noticed late)."""
        group = self.group(kind)
        schedule = self.learner.schedule(group)
        if schedule is None and self.learner.known(group) >= self.learner.min_samples:
            schedule = self._solve(group, kind)
        return schedule

    def first_delay(self, kind: str | None, rand: float) -> float:
        """The wait before a job just submitted is first polled.

        While nothing is learned about the group, its first `SCOUTS` jobs are polled every
        `initial`: the first of them to end gives the group its first schedule, which brings
        every waiting job's poll forward to it. The others (a thousand jobs submitted
        together end together: polled alike, nearly all would be found running) are first
        polled at `_blind`, or sooner once that schedule is in.
        """
        schedule = self._schedule(kind)
        delay = None if schedule is None else schedule_delay(self.cadence, schedule, age=0.0)
        if delay is not None:
            return delay
        group = self.group(kind)
        scouts = self._scouts.get(group, 0)
        jitter = 1 + self.cadence.jitter * (2 * rand - 1)
        if scouts < SCOUTS:
            self._scouts[group] = scouts + 1
            return self.cadence.initial * jitter
        return self._blind(kind) * jitter

    def _blind(self, kind: str | None) -> float:
        """The age up to which, while nothing is learned, the scouts alone are polled: a third
        of the prior's median (if the prior is right, about a tenth of the jobs ended by then,
        and those are noticed less than that late), within `initial` … `maximum`."""
        prior = prior_for(self.provider, kind, self.cadence)
        return max(self.cadence.initial, min(prior.median / 3, self.cadence.maximum))

    def next_delay(
        self, kind: str | None, polls: int, age: float, hints: PollHints, rand: float
    ) -> float | None:
        """The wait before the next poll of a job of `age` seconds, or None past its deadline."""
        schedule = self._schedule(kind)
        if schedule is None:
            # A scout's waits do not grow while it is looking for the first ends (`first_delay`).
            # A notification may have stood in for the first poll.
            steps = 1 if age < self._blind(kind) else max(polls, 1)
            return next_poll_delay(self.cadence, polls=steps, elapsed=age, hints=hints, rand=rand)
        return schedule_delay(self.cadence, schedule, age=age, hints=hints, rand=rand)

    def ended_between(self, kind: str | None, low: float, high: float, rand: float) -> float:
        """A duration for a job of `kind` seen running at age `low` and ended at `high`."""
        return duration_between(self.learner.schedule(self.group(kind)), low, high, rand)

    def finished(self, kind: str | None, submitted: float, seconds: float) -> None:
        """A job submitted (or first seen running) at `submitted` ended after `seconds`."""
        group = self.group(kind)
        self.durations.observe(group, seconds)
        self.learner.finish(group, submitted, seconds)
        if group in self._solving:
            return
        due = self.learner.due(group)
        if not due and not self.learner.checkpoint(group):
            return
        running = list(self._running(group))
        if due or self.learner.moved(group, running):
            loop = asyncio.get_running_loop()
            finished, ages, count = self.learner.inputs(group, running)
            previous = self.learner.schedule(group)
            if previous is not None and self.learner.unchanged(group, finished, ages):
                self.learner.store(group, previous, count, (finished, ages))
                return
            prior = prior_for(self.provider, kind, self.cadence)
            # Poll ages the oldest running job has passed stay in the schedule: moved, they
            # would cost the jobs following them a poll more.
            ages_now = [age for _, age in running]
            # After a shift only what every running job has passed stays (the youngest's).
            if self.learner.shifted(group):
                passed = min(ages_now, default=0.0)
            else:
                passed = max(ages_now, default=0.0)
            done = [t for t in previous.times if t <= passed] if previous is not None else []
            solve = functools.partial(
                solve_for, done=done, complete=self.learner.earlier.get(group, [])
            )
            work = loop.run_in_executor(None, solve, finished, ages, prior, self.cadence)
            self._solving.add(group)
            self._spawn(self._adopt(group, work, count, (finished, ages)))

    async def _adopt(
        self,
        group: str,
        work: asyncio.Future[PollSchedule],
        count: int,
        source: tuple[list[float], list[float]],
    ) -> None:
        try:
            schedule = await work
        except Exception:  # a bug in a solve must not stop the batch: the old schedule stays
            _log.exception("solving the poll schedule of %s failed", group)
            return
        finally:
            self._solving.discard(group)
        self.learner.store(group, schedule, count, source)
        self._on_schedule(group)
