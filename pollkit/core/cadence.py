"""When to poll a job next."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from pollkit.policies import Cadence

__all__ = ["DurationModel", "PollHints", "learned_delay", "next_poll_delay"]


@dataclass(frozen=True, slots=True)
class PollHints:
    """What the last reply said about timing.

    Attributes:
        retry_after: The server asked not to be polled sooner than this (seconds).
        eta_seconds: The API's estimate of the time left.
    """

    retry_after: float | None = None
    eta_seconds: float | None = None


def next_poll_delay(
    cadence: Cadence,
    *,
    polls: int,
    elapsed: float,
    hints: PollHints = PollHints(),
    rand: float = 0.5,
) -> float | None:
    """How long to wait before the next poll, or None when the deadline has passed.

    Args:
        cadence: The policy.
        polls: Polls made so far (≥ 1: the first poll is always immediate).
        elapsed: Seconds since the wait started.
        hints: Server hints from the last reply.
        rand: A uniform random number in [0, 1) for the jitter (0.5 means no jitter).

    Returns:
        Seconds to wait (≥ 0), or None if no poll may happen any more.
    """
    if polls < 1:
        raise ValueError("the first poll is immediate: polls must be ≥ 1")
    remaining = None if cadence.timeout is None else cadence.timeout - elapsed
    if remaining is not None and remaining <= 0:
        return None
    # min() before ** so that a long wait cannot overflow the float.
    exponent = min(polls - 1, 1000)
    base = min(cadence.initial * cadence.multiplier**exponent, cadence.maximum)
    if hints.eta_seconds is not None and hints.eta_seconds >= 0:
        # Wake up close to the announced end instead of sleeping past it.
        base = min(base, max(hints.eta_seconds, cadence.initial))
    delay = base * (1 + cadence.jitter * (2 * rand - 1))
    if hints.retry_after is not None:
        delay = max(delay, hints.retry_after)
    if remaining is not None:
        # The last poll lands on the deadline, not after it.
        delay = min(delay, remaining)
    return max(delay, 0.0)


class DurationModel:
    """Job durations observed per group (provider and kind), for the cadence to learn from.

    Keeps the most recent `max_samples` of each group, sorted. Pure: times are passed in.
    """

    def __init__(self, *, max_samples: int = 512, min_samples: int = 5) -> None:
        self.max_samples = max_samples
        self.min_samples = min_samples
        self._recent: dict[str, list[float]] = {}
        self._sorted: dict[str, list[float]] = {}

    def observe(self, group: str, seconds: float) -> None:
        """Record that a job of `group` took `seconds` from submission to its end."""
        recent = self._recent.setdefault(group, [])
        recent.append(seconds)
        if len(recent) > self.max_samples:
            del recent[0]
        self._sorted[group] = sorted(recent)

    def samples(self, group: str) -> list[float] | None:
        """The sorted durations of `group`, or None while there are too few to trust."""
        found = self._sorted.get(group)
        return found if found is not None and len(found) >= self.min_samples else None


def learned_delay(
    cadence: Cadence,
    *,
    age: float,
    durations: list[float],
    share: float = 0.2,
    lag_cap: float = 2.0,
) -> float | None:
    """Wait until the next poll from the durations seen so far, or None to fall back to backoff.

    Jobs like this one that are still running at `age` ended at the `durations` beyond it.
    Sleep until the earliest of them if that is still far; otherwise poll each time about
    `share` of them would have finished, but never wait longer than `lag_cap` there, so a job
    that finishes is noticed soon.

    Past the durations seen so far the job is at the frontier of what the batch has learned —
    in a batch submitted at once, every running job is, since only the quick ones have ended —
    so it is polled every `lag_cap` until it is twice as old as the longest duration seen;
    beyond that it is an outlier, and the plain backoff takes over.

    Args:
        cadence: Bounds the result to [initial, maximum].
        age: Seconds since the job was submitted.
        durations: Sorted durations of comparable jobs.
        share: Fraction of comparable running jobs expected to finish between two polls.
        lag_cap: Longest wait while jobs like this one are finishing.
    """
    first = bisect.bisect_right(durations, age)
    survivors = len(durations) - first
    if survivors < 3:
        if durations and age <= 2 * durations[-1]:
            return max(min(lag_cap, cadence.maximum), cadence.initial)
        return None
    until_first = durations[first] - age
    if until_first > lag_cap:
        return min(until_first, cadence.maximum)
    step = durations[min(first + max(1, int(share * survivors)), len(durations) - 1)] - age
    return min(max(step, cadence.initial), lag_cap, cadence.maximum)
