"""Fault injection: planned faults (`Simulator.inject`) and the scenario's random ones.

Three families: faults that replace a response (``status``, ``reset``), decided before the
handler runs; ``drop_reply``, which lets the handler run (a submit creates its job) and then
resets the connection instead of answering; and faults that break a download body already under
way (``truncate``, ``reset_mid``, ``stall``), decided only once a body is about to be sent so
that a HEAD, a 416 or an empty body never uses one up.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

from aiohttp import web

from pollkit.sim._scenario import Scenario

__all__ = [
    "BODY_FAULTS",
    "DEFAULT_STALL_SECONDS",
    "FAULTS",
    "FAULT_KINDS",
    "Fault",
    "FaultInjector",
    "fault_label",
    "format_retry_after",
    "reason",
]

FaultKind = Literal["status", "reset", "drop_reply", "truncate", "reset_mid", "stall"]

#: Every kind `Simulator.inject` accepts.
FAULT_KINDS: tuple[str, ...] = ("status", "reset", "drop_reply", "truncate", "reset_mid", "stall")
#: The kinds that break a download body rather than replace a response.
BODY_FAULTS: tuple[str, ...] = ("truncate", "reset_mid", "stall")
#: Pause of an injected ``stall`` when no `stall_seconds` is given.
DEFAULT_STALL_SECONDS = 1.0

_RANDOM_5XX = (500, 502, 503, 504)


def reason(status: int) -> str:
    """The standard reason phrase of an HTTP status, used as the ``message`` of fault bodies."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def fault_label(fault: Fault) -> str:
    """How a fault is counted in the stats' ``faults``: ``"5xx"``, ``"429"``, another status
    code, or the kind (``"reset"``, ``"truncate"``, ``"reset_mid"``, ``"stall"``)."""
    if fault.kind != "status":
        return fault.kind
    if 500 <= fault.status <= 599:
        return "5xx"
    return str(fault.status)


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
            closes the connection without a response; ``"drop_reply"`` handles the request
            (a submit creates its job) and then closes the connection instead of answering.
            On download bodies, after about half the body: ``"truncate"`` closes the
            connection, ``"reset_mid"`` resets it and ``"stall"`` pauses `stall_seconds`,
            then goes on.
        status: HTTP status for ``"status"`` faults.
        retry_after: Seconds for a ``Retry-After`` header, or None for none.
        stall_seconds: Real seconds a ``"stall"`` pauses.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    stall_seconds: float = 0.0


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
        # Its own stream: download faults must not shift the API faults a seed produces.
        self._body_rng = random.Random(f"{scenario.seed}:downloads")
        self._slow_rng = random.Random(f"{scenario.seed}:slow")
        self._lock = threading.Lock()
        self._planned: list[_Injection] = []
        self._burst_left = 0  # 429s still owed by the current rate-limit burst

    def add(
        self,
        *,
        status: int,
        count: int,
        path_prefix: str,
        method: str | None,
        retry_after: float | None,
        kind: str,
        stall_seconds: float | None = None,
    ) -> None:
        """Plan `count` faults for requests whose path starts with `path_prefix`.

        Body faults (``truncate``, ``reset_mid``, ``stall``) only match download routes and
        are used up only by responses that send a body.

        Raises:
            ValueError: An argument is out of range or `kind` is unknown.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
        if stall_seconds is not None and kind != "stall":
            raise ValueError("stall_seconds only applies to kind='stall'")
        if stall_seconds is not None and not 0 <= stall_seconds < float("inf"):
            raise ValueError("stall_seconds must be a finite number >= 0")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, not {status!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if not path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        fault = Fault(
            kind=_KINDS[kind],
            status=status,
            retry_after=retry_after,
            stall_seconds=DEFAULT_STALL_SECONDS if stall_seconds is None else stall_seconds,
        )
        with self._lock:
            self._planned.append(
                _Injection(fault, count, path_prefix, method.upper() if method else None)
            )

    def _take_planned(self, method: str, path: str, *, body: bool) -> Fault | None:
        # Caller holds the lock.
        for injection in self._planned:
            if (injection.fault.kind in BODY_FAULTS) != body:
                continue
            if path.startswith(injection.path_prefix) and injection.method in (None, method):
                injection.remaining -= 1
                if injection.remaining == 0:
                    self._planned.remove(injection)
                return injection.fault
        return None

    def pick(self, method: str, path: str, *, allow_random: bool) -> Fault | None:
        """The fault that replaces this response, if any (``status`` or ``reset``).

        Planned faults are used up as they match. Then a rate-limit burst under way answers
        429; otherwise one draw decides between the scenario's ``http_error_rate``,
        ``rate_limit_rate`` (which starts a burst) and ``api_reset_rate``.

        Args:
            method: The request method.
            path: The request path.
            allow_random: Whether the scenario's random faults apply (API routes only).
        """
        with self._lock:
            planned = self._take_planned(method, path, body=False)
            if planned is not None:
                return planned
            if not allow_random:
                return None
            scenario = self._scenario
            limited = Fault(kind="status", status=429, retry_after=scenario.retry_after)
            if self._burst_left > 0:
                self._burst_left -= 1
                return limited
            errors, limits = scenario.http_error_rate, scenario.rate_limit_rate
            resets = scenario.api_reset_rate
            if errors == 0 and limits == 0 and resets == 0:
                return None
            draw = self._rng.random()
            if draw < errors:
                return Fault(kind="status", status=self._rng.choice(_RANDOM_5XX))
            if draw < errors + limits:
                low, high = scenario.rate_limit_burst
                # Drawn only for real bursts: a scenario of single 429s keeps its old sequence.
                self._burst_left = self._rng.randint(low, high) - 1 if high > 1 else 0
                return limited
            if draw < errors + limits + resets:
                return Fault(kind="reset")
            return None

    def pick_body(self, method: str, path: str) -> Fault | None:
        """The fault that breaks this download body, if any.

        Call it only when a body is about to be sent. Planned body faults come first; then
        one draw decides between the scenario's ``truncate_rate``, ``reset_rate`` and
        ``stall_rate``.

        Args:
            method: The request method.
            path: The request path.

        Returns:
            A ``truncate``, ``reset_mid`` or ``stall`` fault, or None.
        """
        with self._lock:
            planned = self._take_planned(method, path, body=True)
            if planned is not None:
                return planned
            scenario = self._scenario
            truncate, reset, stall = (
                scenario.truncate_rate,
                scenario.reset_rate,
                scenario.stall_rate,
            )
            if truncate == 0 and reset == 0 and stall == 0:
                return None
            draw = self._body_rng.random()
        if draw < truncate:
            return Fault(kind="truncate")
        if draw < truncate + reset:
            return Fault(kind="reset_mid")
        if draw < truncate + reset + stall:
            return Fault(kind="stall", stall_seconds=scenario.stall_seconds)
        return None

    def pick_slow(self) -> float | None:
        """The bandwidth to pace this download body at (a slow body), or None.

        Call it only when a body is about to be sent; one draw of the scenario's
        ``slow_rate``, from a stream of its own.
        """
        scenario = self._scenario
        if scenario.slow_rate == 0:
            return None
        with self._lock:
            draw = self._slow_rng.random()
        return scenario.slow_bandwidth if draw < scenario.slow_rate else None


_KINDS: dict[str, FaultKind] = {
    "status": "status",
    "reset": "reset",
    "drop_reply": "drop_reply",
    "truncate": "truncate",
    "reset_mid": "reset_mid",
    "stall": "stall",
}

#: Where the application keeps its `FaultInjector`.
FAULTS: web.AppKey[FaultInjector] = web.AppKey("pollkit_sim_faults", FaultInjector)
