"""When to poll a job next."""

from __future__ import annotations

from dataclasses import dataclass

from pollkit.policies import Cadence

__all__ = ["PollHints", "next_poll_delay"]


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
