"""Push from the simulator: a status stream per dialect, and Magic Hour's account webhooks.

None of the real APIs streams job statuses; the simulator does, so that push can be tested and
measured against the same jobs that polling sees (`pollkit.StatusStream` reads it):

- ``GET /_sim/events/{dialect}`` (``magichour``, ``pixy``, ``pixyz``) with ``Authorization:
  Bearer <key>``: ``200 text/event-stream``. Each time a job of that dialect changes status
  (queued, rendering, its end) one ``status`` event goes out, ``id`` a sequence number shared by
  all dialects, data ``{"job_id", "kind", "body"}`` where body is the job as a GET of the
  dialect shows it at that moment. ``Last-Event-ID`` replays what came after it. A comment
  line every `KEEPALIVE` seconds keeps idle streams open.
- ``POST /_sim/events/drop`` ends every open stream (``?refuse=1``: and answers new ones 503
  until ``POST /_sim/events/accept``), to test what a client does when push goes away.
- ``POST /_sim/webhooks/magichour`` ``{"url": …}`` registers an account webhook: every image or
  video project then POSTs ``{"type": "<kind>.started|completed|errored", "payload": <project>}``
  (no webhook for ``canceled``, as the real service).

Counts (``events``, ``webhooks``, ``webhook_failures``) are in ``/_sim/stats`` under ``push``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import hmac
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from pollkit._aio import wait_event
from pollkit.sim._state import STATE, Job, SimState
from pollkit.sim.magichour import _routes as magichour
from pollkit.sim.pixy import _routes as pixy
from pollkit.sim.pixy._items import render as pixy_item
from pollkit.sim.pixyz import _routes as pixyz
from pollkit.sim.pixyz._replies import STORE, job_state

__all__ = ["EVENTS", "EventHub", "add_routes", "stream_path"]

logger = logging.getLogger("pollkit.sim.events")

#: Real seconds between keep-alive comments on an idle stream.
KEEPALIVE = 10.0
# Longest real sleep of the ticker, so a jump of the simulated clock is seen soon.
_LONGEST_NAP = 0.25
_WEBHOOK_EVENTS = {"rendering": "started", "complete": "completed", "error": "errored"}

_Render = Callable[[web.Application, str, Job], dict[str, Any]]


def _magichour(app: web.Application, origin: str, job: Job) -> dict[str, Any]:
    return magichour.project_body(origin, app[STATE], job)


def _pixy(app: web.Application, origin: str, job: Job) -> dict[str, Any]:
    return pixy_item(app[STATE], job, None)


def _pixyz(app: web.Application, origin: str, job: Job) -> dict[str, Any]:
    state = app[STATE]
    return job_state(state, app[STORE], job.id, state.clock.now())


_RENDER: dict[str, _Render] = {
    magichour.DIALECT: _magichour,
    pixy.DIALECT: _pixy,
    pixyz.DIALECT: _pixyz,
}


def stream_path(dialect: str) -> str:
    """The path of a dialect's status stream.

    Raises:
        ValueError: The dialect has no stream.
    """
    if dialect not in _RENDER:
        raise ValueError(f"no status stream for {dialect!r}; one of {', '.join(_RENDER)}")
    return f"/_sim/events/{dialect}"


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    dialect: str
    job_id: str
    kind: str | None
    status: str


class EventHub:
    """Watches jobs change status on the simulated clock, and tells streams and webhooks."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.log: list[_Event] = []
        self.refusing = False
        self.generation = 0  # bumped to end every open stream
        self.webhooks: list[tuple[str, str]] = []  # (url, origin of the registration)
        self._due: list[tuple[float, int, str]] = []  # (simulated time, tie, job id)
        self._tie = itertools.count()
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()  # jobs change on request threads of a ThreadedSimulator
        self._wake = asyncio.Event()
        self._published = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        state.job_listeners.append(self._job_changed)

    def _job_changed(self, job: Job) -> None:
        if job.dialect not in _RENDER:
            return
        moments = [job.created_at, job.created_at + job.queue_delay, job.finishes_at]
        if job.canceled_at is not None:
            moments.append(job.canceled_at)
        with self._lock:
            for moment in moments:
                heapq.heappush(self._due, (moment, next(self._tie), job.id))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Emit each status change when the simulated clock reaches it (runs with the app)."""
        self._loop = asyncio.get_running_loop()
        clock = self.state.clock
        while True:
            self._wake.clear()
            now = clock.now()
            with self._lock:
                due = []
                while self._due and self._due[0][0] <= now:
                    due.append(heapq.heappop(self._due)[2])
                upcoming = self._due[0][0] if self._due else None
            for job_id in due:
                self._check(job_id, now)
            nap = _LONGEST_NAP
            if upcoming is not None:
                nap = min(max((upcoming - now) / self.state.scenario.time_scale, 0.0), nap)
            await wait_event(self._wake, nap)

    def _check(self, job_id: str, now: float) -> None:
        job = self.state.jobs[job_id]
        status = job.status(now)
        if self._last.get(job_id) == status:
            return
        self._last[job_id] = status
        kind = None if job.dialect == pixyz.DIALECT else job.kind  # PiXYZ jobs have no kind
        event = _Event(len(self.log) + 1, job.dialect, job.id, kind, status)
        self.log.append(event)
        self._count("events")
        self._wake_streams()
        if job.dialect == magichour.DIALECT and status in _WEBHOOK_EVENTS:
            for url, origin in self.webhooks:
                self._spawn(self._deliver(url, origin, job, status))

    def _count(self, what: str) -> None:
        with self.state.lock:
            self.state.push_counts[what] += 1

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, origin: str, job: Job, status: str) -> None:
        payload = {
            "type": f"{job.kind}.{_WEBHOOK_EVENTS[status]}",
            "payload": magichour.project_body(origin, self.state, job),
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(url, json=payload) as reply:
                reply.raise_for_status()
            self._count("webhooks")
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self._count("webhook_failures")
            logger.info("magichour webhook to %s failed: %s", url, exc)

    def drop(self, *, refuse: bool = False) -> None:
        """End every open stream; with `refuse`, answer new ones 503 until `accept`."""
        self.refusing = refuse
        self.generation += 1
        self._wake_streams()

    def _wake_streams(self) -> None:
        """Wake every stream waiting for news (each waits on the event of its moment)."""
        published, self._published = self._published, asyncio.Event()
        published.set()

    def accept(self) -> None:
        """Serve streams again after a refusing `drop`."""
        self.refusing = False

    async def aclose(self) -> None:
        """Stop webhook deliveries in flight and close their session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def stream(self, request: web.Request, dialect: str) -> web.StreamResponse:
        """Serve one status stream until it is dropped or the client goes away."""
        generation = self.generation
        reply = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await reply.prepare(request)
        resume = request.headers.get("Last-Event-ID", "").strip()
        if resume.isdigit():
            position = min(int(resume), len(self.log))
        else:  # a first connection: tell the client where it starts, so it can resume
            position = len(self.log)
            await reply.write(f"id: {position}\n\n".encode())
        with contextlib.suppress(ConnectionError):  # the client went away
            await self._send(reply, request, dialect, position, generation)
        return reply

    async def _send(
        self,
        reply: web.StreamResponse,
        request: web.Request,
        dialect: str,
        position: int,
        generation: int,
    ) -> None:
        render = _RENDER[dialect]
        origin = f"{request.scheme}://{request.host}"
        while self.generation == generation:
            fresh, position = self.log[position:], len(self.log)
            blocks = [
                _block(e, render(request.app, origin, self.state.jobs[e.job_id]))
                for e in fresh
                if e.dialect == dialect
            ]
            if blocks:
                await reply.write("".join(blocks).encode())
                continue
            if not await wait_event(self._published, KEEPALIVE):
                await reply.write(b": keep-alive\n\n")


def _block(event: _Event, body: dict[str, Any]) -> str:
    data = json.dumps({"job_id": event.job_id, "kind": event.kind, "body": body})
    return f"event: status\nid: {event.seq}\ndata: {data}\n\n"


#: Where the application keeps its `EventHub`.
EVENTS: web.AppKey[EventHub] = web.AppKey("pollkit_sim_events", EventHub)


async def _stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[EVENTS]
    dialect = request.match_info["dialect"]
    if dialect not in _RENDER:
        return web.json_response({"message": f"no status stream for {dialect!r}"}, status=404)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode(), hub.state.api_key.encode()
    ):
        return web.json_response({"message": "Unauthorized"}, status=401)
    if hub.refusing:
        return web.json_response({"message": "event streams are refused"}, status=503)
    return await hub.stream(request, dialect)


async def _drop(request: web.Request) -> web.Response:
    request.app[EVENTS].drop(refuse=request.query.get("refuse") in ("1", "true"))
    return web.Response(status=204)


async def _accept(request: web.Request) -> web.Response:
    request.app[EVENTS].accept()
    return web.Response(status=204)


async def _register_webhook(request: web.Request) -> web.Response:
    try:
        url = (await request.json())["url"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"message": 'body must be {"url": "http://…"}'}, status=400)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return web.json_response({"message": "url must be http(s)"}, status=400)
    request.app[EVENTS].webhooks.append((url, f"{request.scheme}://{request.host}"))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    """Register the stream, its controls and the webhook registration; run the ticker."""
    hub = EventHub(app[STATE])
    app[EVENTS] = hub
    app.router.add_get("/_sim/events/{dialect}", _stream)
    app.router.add_post("/_sim/events/drop", _drop)
    app.router.add_post("/_sim/events/accept", _accept)
    app.router.add_post("/_sim/webhooks/magichour", _register_webhook)

    async def ticker(app: web.Application) -> Any:
        task = asyncio.create_task(hub.run(), name="pollkit-sim-events")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await hub.aclose()

    app.cleanup_ctx.append(ticker)

    async def end_streams(app: web.Application) -> None:
        hub.drop()  # open streams end now, rather than hold the shutdown until its timeout

    app.on_shutdown.append(end_streams)
