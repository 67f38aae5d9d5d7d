"""The flux0-style dialect (docs/apis/flux0.md): agents, sessions and SSE event streams.

Everything is served under ``/flux0/api`` on the simulator (`pollkit.sim.Simulator.urls`):
``/agents`` (list, create 201, retrieve), ``/sessions`` (list, create 201, retrieve),
``POST /sessions/{id}/events/stream`` (the run, as ``200 text/event-stream``) and
``GET /sessions/{id}/events`` (``min_offset``, ``source``, ``correlation_id``, ``types``).

One run is one simulator job (`SimState.create_job`), so the scenario and `Simulator.plan_next`
decide it: an ``acknowledged`` status at once, ``processing`` and ``typing`` when the queue
delay ends, the reply's JSON-patch chunks spread over the render time, and at the end:

* ``complete``: the final ``message`` event is stored (never streamed) and the server closes
  the stream, with no terminal event (docs/apis/flux0.md#quirks);
* ``error`` / ``canceled``: an ``error`` / ``cancelled`` status, stored and streamed, then close;
* ``draft``: the run never starts; the stream stays open after ``acknowledged``.

Quirk modes, chosen by a marker in the user's message: ``[sim:hang]`` keeps the stream open
after the last chunk (like the stock runner; the message is still stored), ``[sim:bogus]``
sends one block with a non-conforming event name (``event: message``) before the chunks,
``[sim:drop]`` resets the connection after the last chunk without storing the message.

Streams wake at least every 50 ms, so a jump of the simulated clock is noticed, and end at
once when the simulator shuts down. Faults (429, 5xx) on the initial response come from
`Simulator.inject` with a ``/flux0/`` path prefix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from pollkit._aio import wait_event
from pollkit.sim._state import STATE, Job, SimState
from pollkit.sim.flux0._models import (
    USER_NAME,
    AgentBody,
    EventBody,
    SessionBody,
    detail,
    event_view,
    new_id,
    parse_body,
    problems_in_order,
    session_view,
    validate_params,
)
from pollkit.sim.transfer._serve import abort_connection

__all__ = ["DIALECT", "PREFIX", "add_routes"]

logger = logging.getLogger("pollkit.sim")

DIALECT = "flux0"
PREFIX = "/flux0"

_API = f"{PREFIX}/api"
_WAKE = 0.05  # longest real sleep of a stream, so a jump of the simulated clock is seen soon
_USER_COOKIE = "flux0_user_sub"
_DEFAULT_SUB = "anonymous"


@dataclass(slots=True)
class _Session:
    record: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)


class _Flux0:
    """The dialect's memory: agents, sessions and their stored events."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.agents: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, _Session] = {}
        self.users: dict[str, dict[str, str]] = {}  # by login name (the cookie's ``sub``)
        self.closing = asyncio.Event()
        self._rng = random.Random(f"{state.scenario.seed}:flux0")

    def new_id(self) -> str:
        return new_id(self._rng, lambda new: new in self.agents or new in self.sessions)

    def user(self, request: web.Request) -> dict[str, str]:
        """The request's user, created on first sight as the server's no-op auth does: every
        route authenticates first, and a new user gets an id and the name ``Anonymous``."""
        sub = request.cookies.get(_USER_COOKIE) or _DEFAULT_SUB
        found = self.users.get(sub)
        if found is None:
            found = self.users[sub] = {"id": self.new_id(), "name": USER_NAME}
        return found

    def stamp(self) -> str:
        moment = datetime.fromtimestamp(self.state.clock.wall(self.state.clock.now()), timezone.utc)
        return moment.isoformat().replace("+00:00", "Z")  # as pydantic writes a UTC datetime

    def store(
        self,
        session: _Session,
        *,
        correlation_id: str,
        type_: str,
        source: str,
        data: dict[str, Any],
        event_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = {
            "id": event_id or self.new_id(),
            "correlation_id": correlation_id,
            "type": type_,
            "source": source,
            "offset": len(session.events),
            "data": data,
            "deleted": False,
            "metadata": metadata,
            "created_at": self.stamp(),
        }
        session.events.append(event)
        return event


_FLUX0: web.AppKey[_Flux0] = web.AppKey("pollkit_sim_flux0", _Flux0)


# -- agents and sessions -----------------------------------------------------------------------


async def _list_agents(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    flux.user(request)
    return web.json_response({"data": list(flux.agents.values())})


async def _create_agent(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    flux.user(request)
    body, problems = await parse_body(request, AgentBody)
    if body is None:
        return detail(422, problems)
    agent_id = flux.new_id()
    agent: dict[str, Any] = {
        "id": agent_id,
        "name": body.name,
        "type": body.type,
        "description": body.description or None,  # the server stores "" as no description
        "created_at": flux.stamp(),
    }
    flux.agents[agent_id] = agent
    return web.json_response({k: v for k, v in agent.items() if v is not None}, status=201)


async def _get_agent(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    flux.user(request)
    agent_id = request.match_info["agent_id"]
    _, problems = validate_params([("path", "agent_id", "id", agent_id)])
    if problems:
        return detail(422, problems)
    agent = flux.agents.get(agent_id)
    if agent is None:
        return detail(404, f"Agent with ID {agent_id} not found")
    return web.json_response(agent)


async def _list_sessions(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    user = flux.user(request)
    wanted = request.query.get("agent_id")
    found = [
        session_view(s.record, drop_none=False)
        for s in flux.sessions.values()
        if s.record["user_id"] == user["id"]  # the server lists the caller's sessions only
        and (wanted is None or s.record["agent_id"] == wanted)
    ]
    return web.json_response({"data": found})


async def _create_session(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    user = flux.user(request)
    body, problems = await parse_body(request, SessionBody)
    if body is None:
        return detail(422, problems)
    if body.agent_id not in flux.agents:
        return detail(400, f"Agent with ID {body.agent_id} not found")
    session_id = body.id or flux.new_id()
    record: dict[str, Any] = {
        "id": session_id,
        "agent_id": body.agent_id,
        "user_id": user["id"],
        "title": body.title,
        "consumption_offsets": {"client": 0},
        "created_at": flux.stamp(),
    }
    flux.sessions[session_id] = _Session(record)
    return web.json_response(session_view(record, drop_none=True), status=201)


async def _get_session(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    flux.user(request)
    session_id = request.match_info["session_id"]
    _, problems = validate_params([("path", "session_id", "id", session_id)])
    if problems:
        return detail(422, problems)
    session = flux.sessions.get(session_id)
    if session is None:
        return detail(404, f"Session with ID {session_id} not found")
    return web.json_response(session_view(session.record, drop_none=True))


async def _list_events(request: web.Request) -> web.Response:
    flux = request.app[_FLUX0]
    flux.user(request)
    session_id = request.match_info["session_id"]
    query = request.query
    checks: list[tuple[str, str, str, Any]] = [("path", "session_id", "id", session_id)]
    for name, kind in (("min_offset", "int"), ("source", "source")):
        if name in query:
            checks.append(("query", name, kind, query[name]))
    if "types" in query:
        checks.append(("query", "types", "types", query.getall("types")))
    values, problems = validate_params(checks)
    if problems:
        return detail(422, problems)
    session = flux.sessions.get(session_id)
    if session is None:
        return detail(400, f"Cannot list events for non-existent session with ID {session_id}")
    min_offset = values.get("min_offset", 0)
    source = values["source"].value if "source" in values else None
    types = {kind.value for kind in values.get("types", ())}
    found = [
        event_view(event)
        for event in session.events
        if event["offset"] >= min_offset
        and (source is None or event["source"] == source)
        and ("correlation_id" not in query or event["correlation_id"] == query["correlation_id"])
        and (not types or event["type"] in types)
    ]
    return web.json_response({"data": found})


# -- the run's stream --------------------------------------------------------------------------


def _reply_words(content: str) -> list[str]:
    words = f"You said: {content}".split(" ")
    return [words[0], *(f" {word}" for word in words[1:])]


@dataclass(slots=True)
class _Run:
    """One create-event stream: the job that times it and what the stream has sent so far."""

    job: Job
    session: _Session
    agent: dict[str, Any]
    correlation_id: str
    run_id: str
    message_id: str
    words: list[str]
    hang: bool
    bogus: bool
    drop: bool
    chunks_sent: int = 0
    started: bool = False
    stored: bool = False

    def chunk_due(self, now: float) -> int:
        """How many chunks should have been sent by simulated time `now`."""
        begin = self.job.created_at + self.job.queue_delay
        if now < begin:
            return 0
        if now >= self.job.finishes_at or self.job.render_time <= 0:
            return len(self.words)
        share = (now - begin) / self.job.render_time
        return min(len(self.words), int(share * len(self.words)) + 1)


def _block(event: str, payload: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


async def _status(
    flux: _Flux0, run: _Run, response: web.StreamResponse, status: str, **extra: Any
) -> None:
    data = {"type": "status", "status": status, **extra}
    flux.store(
        run.session, correlation_id=run.correlation_id, type_="status", source="ai_agent", data=data
    )
    emitted = {
        "id": run.run_id,
        "source": "ai_agent",
        "type": "status",
        "correlation_id": run.correlation_id,
        "data": data,
        "metadata": None,
    }
    await response.write(_block("status", emitted, run.run_id))


async def _chunk(flux: _Flux0, run: _Run, response: web.StreamResponse) -> None:
    clock = flux.state.clock
    payload = {
        "correlation_id": run.correlation_id,
        "event_id": run.message_id,
        "seq": run.chunks_sent,
        "patches": [{"op": "add", "path": "/-", "value": run.words[run.chunks_sent]}],
        "metadata": {"agent_id": run.agent["id"], "agent_name": run.agent["name"]},
        "timestamp": clock.wall(clock.now()),
    }
    run.chunks_sent += 1
    await response.write(_block("chunk", payload))


async def _wait(flux: _Flux0, seconds: float) -> None:
    """Sleep up to `seconds` of real time, or less if the simulator shuts down."""
    await wait_event(flux.closing, min(max(seconds, 0.0), _WAKE))


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _play(
    flux: _Flux0, run: _Run, request: web.Request, response: web.StreamResponse
) -> None:
    """Send the run's blocks as the simulated clock reaches them, until it ends."""
    state, job = flux.state, run.job
    await _status(flux, run, response, "acknowledged", acknowledged_offset=len(run.session.events))
    while not flux.closing.is_set() and not _gone(request):
        now = state.clock.now()
        status = job.status(now)
        if status == "canceled":
            await _status(flux, run, response, "cancelled")
            return
        if status in ("rendering", "complete", "error") and not run.started:
            run.started = True
            await _status(flux, run, response, "processing", acknowledged_offset=0, data={})
            await _status(flux, run, response, "typing")
            if run.bogus:
                await response.write(_block("message", {"correlation_id": run.correlation_id}))
        if status == "error":
            detail = {"exception": "simulated failure", "code": "sim_error"}
            await _status(flux, run, response, "error", data=detail)
            return
        if status == "complete" and run.drop:
            while run.chunks_sent < len(run.words):
                await _chunk(flux, run, response)
            abort_connection(request)  # a dropped stream: reset, no message stored
            return
        if status == "complete" and not run.stored:
            # Stored before the last chunks go out: a client that saw them can read it back.
            run.stored = True
            _store_message(flux, run)
        if run.started:
            while run.chunks_sent < run.chunk_due(now):
                await _chunk(flux, run, response)
        if run.stored and not run.hang:
            return  # the server ends a run by closing its stream (docs/apis/flux0.md)
        next_at = job.finishes_at if run.started else job.created_at + job.queue_delay
        delay = (next_at - now) / state.clock.time_scale
        await _wait(flux, delay if delay > 0 else _WAKE)


def _store_message(flux: _Flux0, run: _Run) -> None:
    data = {
        "type": "message",
        "parts": [{"type": "content", "content": "".join(run.words)}],
        "participant": {"id": run.agent["id"], "name": run.agent["name"]},
    }
    flux.store(
        run.session,
        correlation_id=run.correlation_id,
        type_="message",
        source="ai_agent",
        data=data,
        event_id=run.message_id,
    )


async def _create_event(request: web.Request) -> web.StreamResponse:
    flux = request.app[_FLUX0]
    flux.user(request)
    session_id = request.match_info["session_id"]
    _, problems = validate_params([("path", "session_id", "id", session_id)])
    body, body_problems = await parse_body(request, EventBody)
    if body is None or problems:
        return detail(422, problems_in_order(problems, body_problems))
    if body.type.value != "message":
        return detail(422, "Only message events can currently be added manually")
    content = body.content
    if body.source.value != "user":
        return detail(422, 'Only "user" source is supported for direct posting.')
    if not content:
        return detail(422, "Missing 'message' field in event parameters")
    session = flux.sessions.get(session_id)
    if session is None:
        return detail(400, f"Session with ID {session_id} not found")
    agent = flux.agents.get(session.record["agent_id"])
    if agent is None:
        return detail(400, f"Agent with ID {session.record['agent_id']} not found")
    correlation_id = f"RID({flux.new_id()})::{flux.new_id()}"
    flux.store(
        session,
        correlation_id=correlation_id,
        type_="message",
        source="user",
        data=_user_message(flux, session, content),
    )
    job = flux.state.create_job(
        dialect=DIALECT,
        kind="message",
        type_="message",
        outputs=(),
        details={"session_id": session_id, "correlation_id": correlation_id},
        id_style="uuid",
    )
    run = _Run(
        job=job,
        session=session,
        agent=agent,
        correlation_id=correlation_id,
        run_id=flux.new_id(),
        message_id=flux.new_id(),
        words=_reply_words(content),
        hang="[sim:hang]" in content,
        bogus="[sim:bogus]" in content,
        drop="[sim:drop]" in content,
    )
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "text/event-stream; charset=utf-8"}
    )
    await response.prepare(request)
    try:
        await _play(flux, run, request, response)
        if not _gone(request):
            await response.write_eof()
    except ConnectionResetError:
        logger.debug("flux0 run %s: the client went away", correlation_id)
    return response


def _user_message(flux: _Flux0, session: _Session, content: str) -> dict[str, Any]:
    """The stored user message: the session's user as participant (with the display name of
    that user when the server knows it, else the id), never flagged, no tags (the server has
    no moderation yet)."""
    user_id = session.record["user_id"]
    name = next((u["name"] for u in flux.users.values() if u["id"] == user_id), user_id)
    return {
        "type": "message",
        "participant": {"id": user_id, "name": name},
        "flagged": False,
        "tags": [],
        "parts": [{"type": "content", "content": content}],
    }


async def _unrouted(request: web.Request) -> web.Response:
    return detail(404, "Not Found")


async def _shutdown(app: web.Application) -> None:
    app[_FLUX0].closing.set()  # open streams end now instead of holding the shutdown up


def add_routes(app: web.Application) -> None:
    """Register the dialect's routes on `app` (which holds `STATE`)."""
    app[_FLUX0] = _Flux0(app[STATE])
    app.on_shutdown.append(_shutdown)
    app.router.add_get(f"{_API}/agents", _list_agents, allow_head=False)
    app.router.add_post(f"{_API}/agents", _create_agent)
    app.router.add_get(f"{_API}/agents/{{agent_id}}", _get_agent, allow_head=False)
    app.router.add_get(f"{_API}/sessions", _list_sessions, allow_head=False)
    app.router.add_post(f"{_API}/sessions", _create_session)
    app.router.add_get(f"{_API}/sessions/{{session_id}}", _get_session, allow_head=False)
    app.router.add_post(f"{_API}/sessions/{{session_id}}/events/stream", _create_event)
    app.router.add_get(f"{_API}/sessions/{{session_id}}/events", _list_events, allow_head=False)
    app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", _unrouted)
