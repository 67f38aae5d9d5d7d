"""`Simulator` (async context manager) and `ThreadedSimulator` (the same, for sync code)."""

from __future__ import annotations

import logging
import secrets
from types import TracebackType
from typing import Any

from aiohttp import web

from pollkit._loopthread import LoopThread
from pollkit.sim._app import InjectRequest, PlanRequest, build_app, dialect_urls
from pollkit.sim._clock import SimClock
from pollkit.sim._events import EVENTS, EventHub, stream_path
from pollkit.sim._faults import FaultInjector
from pollkit.sim._scenario import SCENARIOS, Scenario
from pollkit.sim._state import SimState

__all__ = ["Simulator", "ThreadedSimulator"]

logger = logging.getLogger("pollkit.sim")

# How long shutdown waits for requests still in flight (a stalled download, say).
_SHUTDOWN_TIMEOUT = 1.0


def _resolve(scenario: Scenario | str | None) -> Scenario:
    if scenario is None:
        return SCENARIOS["default"]
    if isinstance(scenario, str):
        try:
            return SCENARIOS[scenario]
        except KeyError:
            known = ", ".join(sorted(SCENARIOS))
            raise ValueError(f"unknown scenario {scenario!r}; known: {known}") from None
    return scenario


class Simulator:
    """A local HTTP server that speaks the vendors' job APIs, driven by a `Scenario`.

    Use it as an async context manager; it listens once entered::

        async with Simulator(SCENARIOS["fast"]) as sim:
            ...  # point a client at sim.url with sim.api_key

    Args:
        scenario: The behaviour to simulate, or the name of one in `SCENARIOS`
            (default: ``"default"``).
        api_key: The key clients must send; None picks a random ``mhk_sim_…`` key.
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.

    Attributes:
        scenario: The scenario in use.
        api_key: The accepted API key.
        clock: The simulated clock (`SimClock`); ``clock.now()`` is simulated seconds since
            the server started and ``clock.advance(s)`` jumps ahead.
    """

    def __init__(
        self,
        scenario: Scenario | str | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.scenario = _resolve(scenario)
        self.api_key = api_key or f"mhk_sim_{secrets.token_hex(12)}"
        self.host = host
        self._port = port
        self.clock = SimClock(self.scenario.time_scale)
        self._state = SimState(self.scenario, self.clock, self.api_key)
        self._faults = FaultInjector(self.scenario)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._events: EventHub | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash).

        Raises:
            RuntimeError: The server is not running.
        """
        if self._url is None:
            raise RuntimeError("the simulator is not running; use `async with Simulator(...)`")
        return self._url

    @property
    def port(self) -> int:
        """The port the server listens on (after start)."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def urls(self) -> dict[str, str]:
        """The base URL of each dialect: ``magichour``, ``pixy`` (media and SSO routes),
        ``pixyz`` and ``flux0``; pass them as the providers' ``base_url``."""
        return dialect_urls(self.url)

    def event_stream_url(self, dialect: str) -> str:
        """The URL of a dialect's status stream (``magichour``, ``pixy`` or ``pixyz``), for
        `pollkit.StatusStream` with ``Authorization: Bearer <api_key>``.

        Raises:
            ValueError: The dialect has no stream.
        """
        return self.url + stream_path(dialect)

    def drop_event_streams(self, *, refuse: bool = False) -> None:
        """End every open status stream; with `refuse`, answer new ones 503 until
        `accept_event_streams` (a push source going away, for tests)."""
        self._hub().drop(refuse=refuse)

    def accept_event_streams(self) -> None:
        """Serve status streams again after a refusing drop."""
        self._hub().accept()

    def _hub(self) -> EventHub:
        if self._events is None:
            raise RuntimeError("the simulator is not running; use `async with Simulator(...)`")
        return self._events

    async def start(self) -> None:
        """Start listening. `__aenter__` calls this.

        Raises:
            RuntimeError: Already started.
            OSError: The address could not be bound.
        """
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        app = build_app(self._state, self._faults)
        self._events = app[EVENTS]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{port}"
        self.clock.restart()  # simulated time starts when clients can connect
        logger.info("simulator serving %s (scenario seed=%s)", self._url, self.scenario.seed)

    async def aclose(self) -> None:
        """Stop listening and close open connections. `__aexit__` calls this."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            logger.info("simulator at %s stopped", self._url)
        self._url = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def plan_next(
        self,
        outcome: str | None = "error",
        queue_delay: float | None = None,
        render_time: float | None = None,
        count: int = 1,
    ) -> None:
        """Decide how the next `count` jobs created (on any route) end.

        Args:
            outcome: ``"complete"``, ``"error"``, ``"canceled"``, ``"draft"`` (stuck in draft
                forever), or None to draw it from the scenario as usual.
            queue_delay: Exact simulated seconds in the queue; None draws it.
            render_time: Exact simulated seconds rendering; None draws it.
            count: How many jobs the plan covers.

        Raises:
            pydantic.ValidationError: An argument is out of range.
        """
        plan = PlanRequest(
            outcome=outcome,  # validated by the model
            queue_delay=queue_delay,
            render_time=render_time,
            count=count,
        )
        self._state.plan(plan.outcome, plan.queue_delay, plan.render_time, plan.count)

    def inject(
        self,
        status: int = 500,
        count: int = 3,
        path_prefix: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        kind: str = "status",
        stall_seconds: float | None = None,
    ) -> None:
        """Make the next `count` matching requests fail.

        Control routes (``/_sim/…`` other than downloads) never match. Body faults
        (``truncate``, ``reset_mid``, ``stall``) match only download routes (files, blobs,
        archives) and are used up only by responses that send a body: a HEAD, a 416 or an
        empty body leaves them for the next request.

        Args:
            status: HTTP status to answer, with a ``{"message": ...}`` body.
            count: How many requests fail.
            path_prefix: Only requests whose path starts with this; None means ``/v1/`` for
                ``status`` and ``reset``, and ``/_sim/`` (every download) for body faults.
            method: Only requests with this method; None matches any.
            retry_after: Adds ``Retry-After`` with these seconds.
            kind: ``"status"``; ``"reset"`` to close the connection without answering;
                ``"drop_reply"`` to handle the request (a submit creates its job), then close
                the connection without answering; or,
                after about half of a download body, ``"truncate"`` (close the connection),
                ``"reset_mid"`` (reset it) or ``"stall"`` (pause, then go on).
            stall_seconds: Real seconds a ``"stall"`` pauses (default 1.0); only for stalls.

        Raises:
            pydantic.ValidationError: An argument is out of range.
            ValueError: `stall_seconds` given for another kind.
        """
        rule = InjectRequest(
            status=status,
            count=count,
            path_prefix=path_prefix,
            method=method,
            retry_after=retry_after,
            kind=kind,  # validated by the model
            stall_seconds=stall_seconds,
        )
        self._faults.add(**rule.model_dump())

    def cancel(self, job_id: str) -> str:
        """Cancel a job as a user would from the web app (terminal jobs stay as they are).

        Returns:
            The job's status afterwards.

        Raises:
            KeyError: No job has this id.
        """
        return self._state.cancel(job_id)

    def stats(self) -> dict[str, Any]:
        """What ``GET /_sim/stats`` answers: jobs, outputs, request counters and archives.

        ``requests`` holds ``total``, ``by_route``, ``by_status``, ``injected`` (every request
        that failed on purpose), ``file_bytes_served``, ``blob_bytes_served``,
        ``archive_bytes_served`` and ``download_faults`` (``{"truncate": n, "reset_mid": n,
        "stall": n}``). ``archives`` maps each archive kind built so far in this process to
        its ``size``, ``sha256``, ``entries`` and ``url_path``.
        """
        return self._state.stats()


class ThreadedSimulator:
    """A `Simulator` running on its own event loop in a background thread, for sync code.

    Use it as a context manager; attributes and methods are those of `Simulator` and are safe
    to call from any thread::

        with ThreadedSimulator("fast") as sim:
            client = magic_hour.Client(token=sim.api_key, base_url=sim.url)

    Args:
        scenario: As for `Simulator`.
        api_key: As for `Simulator`.
        host: As for `Simulator`.
        port: As for `Simulator`.
    """

    def __init__(
        self,
        scenario: Scenario | str | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._sim = Simulator(scenario, api_key=api_key, host=host, port=port)
        self._runner: LoopThread | None = None

    @property
    def simulator(self) -> Simulator:
        """The wrapped `Simulator` (its async methods must run on the server's loop)."""
        return self._sim

    @property
    def url(self) -> str:
        """Base URL (see `Simulator.url`)."""
        return self._sim.url

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._sim.port

    @property
    def urls(self) -> dict[str, str]:
        """The base URL of each dialect (see `Simulator.urls`)."""
        return self._sim.urls

    def event_stream_url(self, dialect: str) -> str:
        """The URL of a dialect's status stream (see `Simulator.event_stream_url`)."""
        return self._sim.event_stream_url(dialect)

    @property
    def api_key(self) -> str:
        """The accepted API key."""
        return self._sim.api_key

    @property
    def scenario(self) -> Scenario:
        """The scenario in use."""
        return self._sim.scenario

    @property
    def clock(self) -> SimClock:
        """The simulated clock."""
        return self._sim.clock

    def start(self) -> None:
        """Start the server thread and wait until it listens.

        Raises:
            RuntimeError: Already started.
            OSError: The address could not be bound.
        """
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = LoopThread("pollkit-sim", owner="a ThreadedSimulator")
        try:
            runner.run(self._sim.start())
        except BaseException:
            runner.stop()
            raise
        self._runner = runner

    def close(self) -> None:
        """Stop the server and its thread (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.run(self._sim.aclose())
        finally:
            runner.stop()

    def __enter__(self) -> ThreadedSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def plan_next(
        self,
        outcome: str | None = "error",
        queue_delay: float | None = None,
        render_time: float | None = None,
        count: int = 1,
    ) -> None:
        """See `Simulator.plan_next`."""
        self._sim.plan_next(outcome, queue_delay, render_time, count)

    def inject(
        self,
        status: int = 500,
        count: int = 3,
        path_prefix: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        kind: str = "status",
        stall_seconds: float | None = None,
    ) -> None:
        """See `Simulator.inject`."""
        self._sim.inject(status, count, path_prefix, method, retry_after, kind, stall_seconds)

    def cancel(self, job_id: str) -> str:
        """See `Simulator.cancel`."""
        return self._sim.cancel(job_id)

    def stats(self) -> dict[str, Any]:
        """See `Simulator.stats`."""
        return self._sim.stats()
