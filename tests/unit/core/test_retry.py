"""What is retried, and how long the waits between attempts are."""

from __future__ import annotations

import random

import pytest

from pollkit.core.retry import is_retryable, parse_retry_after, retry_delays, submit_fate
from pollkit.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    InvalidRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    ReadTimeout,
    ServerError,
)
from pollkit.policies import RetryPolicy, SubmitPolicy

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


# --- flux0-style RetryConfig ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (
            {"initial_interval": 500, "max_interval": 60_000, "exponent": 1.5},
            {"initial": 0.5, "maximum": 60.0, "multiplier": 1.5},
        ),
        (
            {"initial_interval": 1, "max_interval": 50, "exponent": 1.1},
            {"initial": 0.001, "maximum": 0.05, "multiplier": 1.1},
        ),
    ],
)
def test_from_backoff_maps_milliseconds_to_seconds(
    backoff: dict[str, float], expected: dict[str, float]
) -> None:
    policy = RetryPolicy.from_backoff(max_elapsed_time=100, **backoff)
    for name, value in expected.items():
        assert getattr(policy, name) == pytest.approx(value)
    assert policy.max_elapsed == pytest.approx(0.1)
    assert policy.max_attempts is None  # flux0 counts no attempts: only the time budget
    assert policy.jitter_seconds == 1.0
    assert policy.jitter == 0.0
    assert policy.statuses == frozenset({429, 500, 502, 503, 504})
    assert policy.retry_connection_errors is False


def test_a_strategy_other_than_backoff_means_one_attempt() -> None:
    policy = RetryPolicy.from_backoff(
        strategy="none", initial_interval=1, max_interval=2, exponent=1, max_elapsed_time=3
    )
    assert policy.max_attempts == 1


def test_from_retry_config_reads_a_retry_config_object() -> None:
    from types import SimpleNamespace

    config = SimpleNamespace(
        strategy="backoff",
        backoff=SimpleNamespace(
            initial_interval=250, max_interval=4000, exponent=2.0, max_elapsed_time=30_000
        ),
        retry_connection_errors=True,
    )
    policy = RetryPolicy.from_retry_config(config)
    assert (policy.initial, policy.maximum, policy.multiplier) == (0.25, 4.0, 2.0)
    assert policy.max_elapsed == 30.0
    assert policy.retry_connection_errors is True


def test_from_retry_config_names_what_is_missing() -> None:
    from pollkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"not a RetryConfig.*strategy"):
        RetryPolicy.from_retry_config(object())


def test_flux0_waits_are_capped_and_mostly_at_the_cap() -> None:
    # docs/apis/flux0.md: initial 1 ms, max 50 ms, exponent 1.1 — the random 0–1 s added to every
    # wait pushes nearly all of them to the 50 ms cap.
    policy = RetryPolicy.from_backoff(
        initial_interval=1, max_interval=50, exponent=1.1, max_elapsed_time=100
    )
    delays = _delays(policy, [None] * 200)
    assert all(0.001 <= d <= 0.05 for d in delays)
    assert sum(d == 0.05 for d in delays) >= 180


def test_status_patterns_are_expanded() -> None:
    policy = RetryPolicy(statuses=["5XX", 429, "425"])
    assert policy.statuses == frozenset({*range(500, 600), 429, 425})


def test_retries_must_end_somehow() -> None:
    with pytest.raises(ValueError, match="max_attempts or max_elapsed"):
        RetryPolicy(max_attempts=None, max_elapsed=None)


# -- submits: what a failure says about the job it was to create ------------------------------

SUBMIT = SubmitPolicy()


@pytest.mark.parametrize(
    ("error", "policy", "fate"),
    [
        # Never sent: the connection was never made.
        (ConnectError("refused", sent=False), SUBMIT, "unsent"),
        (ReadTimeout("connect timed out", sent=False), SUBMIT, "unsent"),
        (ConnectError("refused", sent=False), SubmitPolicy(retry_unsent=False), "refused"),
        # The server said it did not take it.
        (RateLimited(status_code=429), SUBMIT, "not_taken"),
        (ServerError(status_code=503), SUBMIT, "not_taken"),
        (ServerError(status_code=503), SubmitPolicy(retry_statuses=[429]), "ambiguous"),
        (ServerError(status_code=502), SubmitPolicy(retry_statuses=[429, 502]), "not_taken"),
        # Read and refused: nothing was created.
        (AuthenticationError(status_code=401), SUBMIT, "refused"),
        (InvalidRequest(status_code=422), SUBMIT, "refused"),
        (NotFound(status_code=404), SUBMIT, "refused"),
        (ConfigurationError("bad spec"), SUBMIT, "refused"),
        # It may exist.
        (ServerError(status_code=500), SUBMIT, "ambiguous"),
        (ServerError(status_code=502), SUBMIT, "ambiguous"),
        (ServerError(status_code=504), SUBMIT, "ambiguous"),
        (ConnectError("reset"), SUBMIT, "ambiguous"),
        (ReadTimeout("slow"), SUBMIT, "ambiguous"),
        (ProtocolError("a 200 that is not JSON"), SUBMIT, "ambiguous"),
        (RuntimeError("unknown"), SUBMIT, "ambiguous"),
    ],
)
def test_submit_fate(error: BaseException, policy: SubmitPolicy, fate: str) -> None:
    assert submit_fate(error, policy) == fate
