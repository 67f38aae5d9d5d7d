"""Fault injection: planned faults (`Simulator.inject`) and the scenario's random ones."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

from pollkit.sim.scenario import Scenario

__all__ = ["Fault", "FaultInjector", "format_retry_after", "reason"]

FaultKind = Literal["status", "reset"]

_RANDOM_5XX = (500, 502, 503, 504)


def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status, used as the ``message`` of fault bodies."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def format_retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds as an integer, otherwise a short decimal.

    Fractions are not standard HTTP, but they keep fast test scenarios fast; clients that only
    parse integers fall back to their own backoff.
    """
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:g}"


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of answering a request.

    Attributes:
        kind: ``"status"`` answers `status` with a ``{"message": ...}`` body; ``"reset"``
            closes the connection without a response.
        status: HTTP status for ``"status"`` faults.
        retry_after: Seconds for a ``Retry-After`` header, or None for none.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None


@dataclass(slots=True)
class _Injection:
    fault: Fault
    remaining: int
    path_prefix: str
    method: str | None


class FaultInjector:
    """Decides, request by request, whether to answer with a fault.

    Planned faults are consumed first, in the order they were added. Random faults come from
    the scenario's rates and their own RNG, so they are reproducible and independent of job
    randomness.

    Args:
        scenario: Supplies the seed, the rates and ``retry_after``.
    """

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._rng = random.Random(f"{scenario.seed}:faults")
        self._lock = threading.Lock()
        self._planned: list[_Injection] = []

    def add(
        self,
        *,
        status: int,
        count: int,
        path_prefix: str,
        method: str | None,
        retry_after: float | None,
        kind: str,
    ) -> None:
        """Plan `count` faults for requests whose path starts with `path_prefix`.

        Raises:
            ValueError: An argument is out of range or `kind` is unknown.
        """
        if kind not in ("status", "reset"):
            raise ValueError(f"kind must be 'status' or 'reset', not {kind!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if not path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        fault = Fault(
            kind="reset" if kind == "reset" else "status", status=status, retry_after=retry_after
        )
        with self._lock:
            self._planned.append(
                _Injection(fault, count, path_prefix, method.upper() if method else None)
            )

    def pick(self, method: str, path: str, *, allow_random: bool) -> Fault | None:
        """The fault for this request, if any; planned faults are used up as they match.

        Args:
            method: The request method.
            path: The request path.
            allow_random: Whether the scenario's random faults apply (API routes only).
        """
        with self._lock:
            for injection in self._planned:
                if path.startswith(injection.path_prefix) and injection.method in (None, method):
                    injection.remaining -= 1
                    if injection.remaining == 0:
                        self._planned.remove(injection)
                    return injection.fault
            if not allow_random:
                return None
            scenario = self._scenario
            if scenario.http_error_rate == 0 and scenario.rate_limit_rate == 0:
                return None
            draw = self._rng.random()
            if draw < scenario.http_error_rate:
                return Fault(kind="status", status=self._rng.choice(_RANDOM_5XX))
            if draw < scenario.http_error_rate + scenario.rate_limit_rate:
                return Fault(kind="status", status=429, retry_after=scenario.retry_after)
            return None
