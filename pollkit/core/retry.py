"""Which failures are worth another attempt, and how long to wait before it; and, for submits,
what a failure says about the job it meant to create (`submit_fate`)."""

from __future__ import annotations

import os
import random
from collections.abc import Generator
from typing import Literal

from pollkit.core.cadence import capped_growth
from pollkit.errors import (
    APIError,
    ConfigurationError,
    ConnectError,
    PollkitError,
    RateLimited,
    ReadTimeout,
    TransportError,
)
from pollkit.policies import RetryPolicy, SubmitPolicy

__all__ = ["SubmitFate", "is_retryable", "retry_after_of", "retry_delays", "submit_fate"]

#: What a failed submit says about its job (see `SubmitPolicy` for why each is where it is).
#: ``unsent``: never left, retry with backoff; ``not_taken``: the server said it did not take
#: it, retry after its Retry-After; ``refused``: nothing was created, do not retry;
#: ``ambiguous``: the job may exist.
SubmitFate = Literal["unsent", "not_taken", "refused", "ambiguous"]


def is_retryable(error: BaseException, policy: RetryPolicy) -> bool:
    """Whether `error` is transient under `policy` (the one predicate the whole library uses)."""
    if isinstance(error, (ConnectError, ReadTimeout)):
        return policy.retry_connection_errors
    if isinstance(error, APIError):
        return error.status_code in policy.statuses
    return False


def submit_fate(error: BaseException, policy: SubmitPolicy) -> SubmitFate:
    """What the failure of a submit request says about the job it was to create.

    Decided only from what the transport reported: the HTTP status, or whether the request
    could have left (`TransportError.sent`). An error pollkit raised before sending anything
    (a bad spec) is ``refused``; any exception this does not know is ``ambiguous``.
    """
    if isinstance(error, APIError):
        if error.status_code in policy.retry_statuses:
            return "not_taken"
        if 400 <= error.status_code < 500:
            return "refused"  # the server read the request and said no
        return "ambiguous"  # 500, 502, 504…: it may have created the job before failing
    if isinstance(error, TransportError):
        if not error.sent:
            return "unsent" if policy.retry_unsent else "refused"
        return "ambiguous"  # a reset, a timeout after sending, an unreadable 2xx
    if isinstance(error, ConfigurationError):
        return "refused"
    return "ambiguous"


def retry_after_of(error: BaseException | None) -> float | None:
    """The wait a server asked for with its error, if any."""
    if isinstance(error, RateLimited):
        return error.retry_after
    if isinstance(error, APIError):
        return parse_retry_after(error.headers.get("Retry-After"))
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for dates or garbage."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # HTTP-dates are rare in job APIs; treat them as no hint
    return seconds if seconds >= 0 else None


# Shared: seeding a generator per call reads the OS's entropy, ~70 µs for every download.
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)  # children must not jitter alike


def retry_delays(
    policy: RetryPolicy, rng: random.Random | None = None
) -> Generator[float, PollkitError | None, None]:
    """Waits between attempts, as a generator that `backoff` drives.

    `backoff` sends each failure into the generator, so a Retry-After carried by the error raises
    the wait for that attempt. Jitter is applied here (pass ``jitter=None`` to backoff).
    """
    rng = rng or _RANDOM
    error = yield 0.0  # priming value, discarded by backoff
    attempt = 0
    while True:
        base = capped_growth(policy.initial, policy.multiplier, attempt, policy.maximum)
        delay = base * (1 + policy.jitter * (2 * rng.random() - 1))
        if policy.jitter_seconds:
            delay = min(delay + policy.jitter_seconds * rng.random(), policy.maximum)
        hint = retry_after_of(error)
        if hint is not None:
            delay = max(delay, hint)
        error = yield delay
        attempt += 1
