"""When to poll a job next."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pollkit.policies import Cadence

__all__ = [
    "DurationModel",
    "PollHints",
    "capped_growth",
    "next_poll_delay",
]


@dataclass(frozen=True, slots=True)
class PollHints:
    """What the last reply said about timing.

    Attributes:
        retry_after: The server asked not to be polled sooner than this (seconds).
        eta_seconds: The API's estimate of the time left.
    """

    retry_after: float | None = None
    eta_seconds: float | None = None


def capped_growth(initial: float, multiplier: float, steps: int, maximum: float) -> float:
    """``initial × multiplier^steps``, capped at `maximum`, for any number of steps.

    Never overflows a float: past the step that reaches the cap, the power is not taken at all.
    """
    if initial <= 0 or multiplier <= 1 or initial >= maximum:
        return min(initial, maximum)
    needed = math.ceil((math.log(maximum) - math.log(initial)) / math.log(multiplier))
    if steps >= needed:
        return maximum
    try:
        return min(initial * multiplier**steps, maximum)
    except OverflowError:  # a tiny initial: the power overflows before the product does
        return min(math.exp(math.log(initial) + steps * math.log(multiplier)), maximum)


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
    base = capped_growth(cadence.initial, cadence.multiplier, polls - 1, cadence.maximum)
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

    def __init__(self, *, max_samples: int = 1024, min_samples: int = 5) -> None:
        self.max_samples = max_samples
        self.min_samples = min_samples
        self._recent: dict[str, list[float]] = {}
        self._sorted: dict[str, list[float]] = {}
        self._new: dict[str, list[float]] = {}

    def observe(self, group: str, seconds: float) -> None:
        """Record that a job of `group` took `seconds` from submission to its end."""
        self._new.setdefault(group, []).append(seconds)
        recent = self._recent.setdefault(group, [])
        recent.append(seconds)
        if len(recent) > self.max_samples:
            del recent[0]
        self._sorted[group] = sorted(recent)

    def export(self) -> dict[str, list[float]]:
        """Every group's durations, oldest first (what a cache file keeps)."""
        return {group: list(recent) for group, recent in self._recent.items()}

    def take_new(self) -> dict[str, list[float]]:
        """The durations observed since the last call (what a cache has yet to keep)."""
        new, self._new = self._new, {}
        return new

    def load(self, groups: dict[str, list[float]]) -> None:
        """Add durations learned elsewhere (an earlier run's), before this model's own."""
        for group, values in groups.items():
            mine = self._recent.get(group, [])
            merged = [*values, *mine][-self.max_samples :]
            self._recent[group] = merged
            self._sorted[group] = sorted(merged)

    def samples(self, group: str) -> list[float] | None:
        """The sorted durations of `group`, or None while there are too few to trust."""
        found = self._sorted.get(group)
        return found if found is not None and len(found) >= self.min_samples else None
