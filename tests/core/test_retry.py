"""What is retried, and how long the waits between attempts are."""

from __future__ import annotations

import random

import pytest

from pollkit.core.retry import is_retryable, parse_retry_after, retry_delays
from pollkit.errors import (
    AuthenticationError,
    ConnectError,
    InvalidRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    ReadTimeout,
    ServerError,
)
from pollkit.policies import RetryPolicy

DEFAULT = RetryPolicy()
NO_CONNECTION_RETRIES = RetryPolicy(retry_connection_errors=False)


@pytest.mark.parametrize(
    ("error", "policy", "expected"),
    [
        (ConnectError("reset"), DEFAULT, True),
        (ReadTimeout("slow"), DEFAULT, True),
        (ConnectError("reset"), NO_CONNECTION_RETRIES, False),
        (ReadTimeout("slow"), NO_CONNECTION_RETRIES, False),
        (ServerError(status_code=500), DEFAULT, True),
        (ServerError(status_code=503), DEFAULT, True),
        (ServerError(status_code=501), DEFAULT, False),
        (RateLimited(status_code=429), DEFAULT, True),
        (AuthenticationError(status_code=401), DEFAULT, False),
        (NotFound(status_code=404), DEFAULT, False),
        (InvalidRequest(status_code=422), DEFAULT, False),
        (ProtocolError("not json"), DEFAULT, False),
        (ValueError("not ours"), DEFAULT, False),
        (ServerError(status_code=500), RetryPolicy(statuses=frozenset({429})), False),
    ],
)
def test_is_retryable(error: Exception, policy: RetryPolicy, expected: bool) -> None:
    assert is_retryable(error, policy) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def _delays(policy: RetryPolicy, errors: list[Exception | None]) -> list[float]:
    gen = retry_delays(policy, random.Random(1))
    gen.send(None)  # backoff primes the generator the same way
    return [gen.send(e) for e in errors]


def test_delays_grow_and_are_capped() -> None:
    policy = RetryPolicy(initial=1, maximum=5, multiplier=2, jitter=0)
    assert _delays(policy, [None] * 5) == [1, 2, 4, 5, 5]


def test_jittered_delays_stay_within_bounds() -> None:
    policy = RetryPolicy(initial=1, maximum=8, multiplier=2, jitter=0.25)
    for attempt, delay in enumerate(_delays(policy, [None] * 6)):
        base = min(2**attempt, 8)
        assert base * 0.75 <= delay <= base * 1.25


def test_retry_after_of_the_error_is_a_floor() -> None:
    policy = RetryPolicy(initial=0.1, maximum=1, jitter=0)
    limited = RateLimited(status_code=429, retry_after=3.0)
    unavailable = ServerError(status_code=503, headers={"Retry-After": "2"})
    assert _delays(policy, [limited, unavailable, None]) == [3.0, 2.0, 0.4]
