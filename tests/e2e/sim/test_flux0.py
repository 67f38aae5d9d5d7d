"""The flux0-style dialect over real sockets: agents, sessions, the SSE run stream, stored events,
validation and the quirks of docs/apis/flux0.md#quirks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pollkit.core.sse import ServerSentEvent, SSEDecoder
from pollkit.sim import Simulator
from tests.e2e.sim.helpers import FLUX0_ID


@pytest.fixture
async def fx(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session on the flux0 prefix."""
    async with aiohttp.ClientSession(base_url=sim.urls["flux0"] + "/") as session:
        yield session


async def post(fx: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with fx.post(path, json=body) as reply:
        return reply.status, await reply.json()


async def get(fx: aiohttp.ClientSession, path: str, params: Any = None) -> tuple[int, Any]:
    async with fx.get(path, params=params) as reply:
        return reply.status, await reply.json()


async def session_id(fx: aiohttp.ClientSession) -> str:
    status, agent = await post(fx, "api/agents", {"name": "Drizzle", "type": "echo"})
    assert status == 201
    status, session = await post(fx, "api/sessions", {"agent_id": agent["id"]})
    assert status == 201
    return str(session["id"])


def message(content: str = "hi") -> dict[str, str]:
    return {"type": "message", "source": "user", "content": content}


async def blocks(reply: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Raw blocks (ending in a blank line) until the server closes the stream."""
    while True:
        block = await reply.content.readuntil(b"\n\n")
        if not block:
            return
        assert block.endswith(b"\n\n"), block
        yield block


async def run(fx: aiohttp.ClientSession, sid: str, content: str = "hi") -> list[bytes]:
    path = f"api/sessions/{sid}/events/stream"
    async with fx.post(path, json=message(content)) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        return [block async for block in blocks(reply)]


def decode(raw: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for block in raw for event in decoder.feed(block)]
    assert len(events) == len(raw)
    return events


def statuses(events: list[ServerSentEvent]) -> list[str]:
    return [json.loads(e.data)["data"]["status"] for e in events if e.event == "status"]


def reply_text(events: list[ServerSentEvent]) -> str:
    document: list[str] = []
    for event in events:
        if event.event == "chunk":
            for patch in json.loads(event.data)["patches"]:
                assert (patch["op"], patch["path"]) == ("add", "/-")
                document.append(patch["value"])
    return "".join(document)


# -- agents and sessions -----------------------------------------------------------------------


async def test_agents_create_retrieve_and_list(fx: aiohttp.ClientSession) -> None:
    status, agent = await post(fx, "api/agents", {"name": "Drizzle", "type": "echo"})
    assert status == 201
    assert set(agent) == {"id", "name", "type", "created_at"}  # a null description is omitted
    assert len(agent["id"]) == 10
    status, again = await get(fx, f"api/agents/{agent['id']}")
    assert (status, again) == (200, {**agent, "description": None})
    assert await get(fx, "api/agents") == (200, {"data": [again]})


@pytest.mark.parametrize(
    "body",
    [{"name": "", "type": "echo"}, {"name": "x" * 101, "type": "echo"}, {"type": "echo"}, []],
)
async def test_agent_validation_is_422(fx: aiohttp.ClientSession, body: Any) -> None:
    status, reply = await post(fx, "api/agents", body)
    assert status == 422
    assert isinstance(reply["detail"], list)


async def test_unknown_ids_404_and_wrong_lengths_422(fx: aiohttp.ClientSession) -> None:
    assert await get(fx, "api/agents/0123456789") == (
        404,
        {"detail": "Agent with ID 0123456789 not found"},
    )
    assert await get(fx, "api/sessions/0123456789") == (
        404,
        {"detail": "Session with ID 0123456789 not found"},
    )
    for path in ("api/agents/short", "api/sessions/much-too-long-id"):
        status, reply = await get(fx, path)
        assert status == 422
        assert reply["detail"][0]["loc"][0] == "path"


async def test_sessions_create_retrieve_list_and_cookie(sim: Simulator) -> None:
    cookies = {"flux0_user_sub": "ada"}
    base = sim.urls["flux0"] + "/"
    async with aiohttp.ClientSession(base_url=base, cookies=cookies) as fx:
        _, agent = await post(fx, "api/agents", {"name": "A", "type": "t"})
        _, other = await post(fx, "api/agents", {"name": "B", "type": "t"})
        status, created = await post(fx, "api/sessions", {"agent_id": agent["id"], "title": "T"})
        assert status == 201
        assert await get(fx, f"api/sessions/{created['id']}") == (200, created)
        status, mine = await post(fx, "api/sessions", {"agent_id": other["id"], "id": "ABCDEFGHIJ"})
        assert (status, mine["id"], "title" in mine) == (201, "ABCDEFGHIJ", False)
        assert mine["user_id"] == created["user_id"]  # one user per login name
        # The list route writes a missing title as null; create and retrieve leave it out.
        assert await get(fx, "api/sessions", {"agent_id": agent["id"]}) == (
            200,
            {"data": [created]},
        )
        _, everything = await get(fx, "api/sessions")
        assert everything["data"][1] == {**mine, "title": None}
        status, reply = await post(fx, "api/sessions", {"agent_id": "0123456789"})
        assert (status, reply) == (400, {"detail": "Agent with ID 0123456789 not found"})
    async with aiohttp.ClientSession(base_url=base) as anonymous:
        assert await get(anonymous, "api/sessions") == (200, {"data": []})  # ada's are hers
        status, theirs = await post(anonymous, "api/sessions", {"agent_id": agent["id"]})
    assert status == 201
    assert FLUX0_ID.match(theirs["user_id"])
    assert theirs["user_id"] != created["user_id"]


# -- the run stream ----------------------------------------------------------------------------


async def test_complete_run_streams_statuses_and_chunks_then_closes(
    sim: Simulator, fx: aiohttp.ClientSession
) -> None:
    sid = await session_id(fx)
    sim.plan_next("complete", queue_delay=0, render_time=0)
    raw = await run(fx, sid, "hello there")
    for block in raw:
        lines = block.decode().split("\n")[:-2]
        name = lines[0]
        if name == "event: status":
            assert [line[:4] for line in lines[1:]] == ["id: ", "data"]
        else:
            assert name == "event: chunk"
            assert [line[:6] for line in lines[1:]] == ["data: "]  # no id: line
    events = decode(raw)
    assert statuses(events) == ["acknowledged", "processing", "typing"]
    assert {e.event for e in events} == {"status", "chunk"}  # never completed/ready/message
    assert reply_text(events) == "You said: hello there"
    first = json.loads(events[0].data)
    assert (first["source"], first["type"]) == ("ai_agent", "status")
    correlation = first["correlation_id"]
    chunk = json.loads(events[-1].data)
    assert set(chunk) == {"correlation_id", "event_id", "seq", "patches", "metadata", "timestamp"}
    params = {"correlation_id": correlation, "types": "message"}
    status, stored = await get(fx, f"api/sessions/{sid}/events", params)
    assert status == 200
    final = [e for e in stored["data"] if e["source"] == "ai_agent"]
    assert len(final) == 1
    assert final[0]["id"] == chunk["event_id"]
    assert final[0]["data"]["parts"] == [{"type": "content", "content": "You said: hello there"}]
    users = [e for e in stored["data"] if e["source"] == "user"]
    assert users[0]["data"]["parts"][0]["content"] == "hello there"


async def test_run_follows_the_simulated_clock(sim: Simulator, fx: aiohttp.ClientSession) -> None:
    sid = await session_id(fx)  # MANUAL: 100 s in the queue, 100 s rendering
    path = f"api/sessions/{sid}/events/stream"
    async with fx.post(path, json=message("one two three")) as reply:
        stream = blocks(reply)
        assert statuses(decode([await anext(stream)])) == ["acknowledged"]
        sim.clock.advance(100)
        assert statuses(decode([await anext(stream), await anext(stream)])) == [
            "processing",
            "typing",
        ]
        assert decode([await anext(stream)])[0].event == "chunk"  # the first chunk at once
        sim.clock.advance(100)
        rest = decode([block async for block in stream])
    assert {e.event for e in rest} == {"chunk"}
    assert len(rest) == 4  # "You said: one two three" is five words


@pytest.mark.parametrize(("outcome", "last"), [("error", "error"), ("canceled", "cancelled")])
async def test_error_and_cancelled_runs(
    sim: Simulator, fx: aiohttp.ClientSession, outcome: str, last: str
) -> None:
    sid = await session_id(fx)
    sim.plan_next(outcome, queue_delay=0, render_time=0)
    events = decode(await run(fx, sid))
    assert statuses(events)[-1] == last
    final = json.loads(events[-1].data)
    if outcome == "error":
        assert final["data"]["data"] == {"exception": "simulated failure", "code": "sim_error"}
    params = {"correlation_id": final["correlation_id"], "source": "ai_agent"}
    _, stored = await get(fx, f"api/sessions/{sid}/events", params)
    assert [e["type"] for e in stored["data"]][-1] == "status"  # no agent message stored
    assert stored["data"][-1]["data"]["status"] == last


async def test_user_cancel_mid_stream(sim: Simulator, fx: aiohttp.ClientSession) -> None:
    sid = await session_id(fx)
    path = f"api/sessions/{sid}/events/stream"
    async with fx.post(path, json=message()) as reply:
        stream = blocks(reply)
        await anext(stream)
        job_id = next(j.id for j in sim._state.jobs.values() if j.dialect == "flux0")
        sim.cancel(job_id)
        rest = decode([block async for block in stream])
    assert statuses(rest) == ["cancelled"]


async def test_hang_mode_keeps_the_stream_open_but_stores_the_message(
    sim: Simulator, fx: aiohttp.ClientSession
) -> None:
    sid = await session_id(fx)
    sim.plan_next("complete", queue_delay=0, render_time=0)
    path = f"api/sessions/{sid}/events/stream"
    async with fx.post(path, json=message("wait [sim:hang]")) as reply:
        stream = blocks(reply)
        seen = decode([await anext(stream) for _ in range(3 + 4)])
        assert reply_text(seen) == "You said: wait [sim:hang]"
        _, stored = await get(fx, f"api/sessions/{sid}/events", {"types": "message"})
        assert stored["data"][-1]["source"] == "ai_agent"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reply.content.read(1), 0.2)  # still open, nothing more
        await sim.aclose()  # shutdown ends the open stream cleanly
        assert await reply.content.read() == b""


async def test_bogus_mode_sends_a_non_conforming_event_name(
    sim: Simulator, fx: aiohttp.ClientSession
) -> None:
    sid = await session_id(fx)
    sim.plan_next("complete", queue_delay=0, render_time=0)
    events = decode(await run(fx, sid, "[sim:bogus]"))
    assert [e.event for e in events][3] == "message"


async def test_list_events_filters(sim: Simulator, fx: aiohttp.ClientSession) -> None:
    sid = await session_id(fx)
    sim.plan_next("complete", queue_delay=0, render_time=0, count=2)
    await run(fx, sid, "a")
    await run(fx, sid, "b")
    _, everything = await get(fx, f"api/sessions/{sid}/events")
    offsets = [e["offset"] for e in everything["data"]]
    assert offsets == list(range(len(offsets)))
    _, later = await get(fx, f"api/sessions/{sid}/events", {"min_offset": "3"})
    assert [e["offset"] for e in later["data"]] == offsets[3:]
    query = [("types", "message"), ("types", "status"), ("source", "user")]
    _, users = await get(fx, f"api/sessions/{sid}/events", query)
    assert [e["data"]["parts"][0]["content"] for e in users["data"]] == ["a", "b"]
    _, statuses_only = await get(fx, f"api/sessions/{sid}/events", {"types": "status"})
    assert {e["type"] for e in statuses_only["data"]} == {"status"}


CREATE_ERRORS = [
    ("not JSON", b"{", 422, list),
    ("no type", {"source": "user", "content": "x"}, 422, list),
    ("wrong type", {"type": "tool", "source": "user", "content": "x"}, 422,
     "Only message events can currently be added manually"),
    ("wrong source", {"type": "message", "source": "ai_agent", "content": "x"}, 422,
     'Only "user" source is supported for direct posting.'),
    ("empty content", {"type": "message", "source": "user", "content": ""}, 422,
     "Missing 'message' field in event parameters"),
    ("no content", {"type": "message", "source": "user"}, 422,
     "Missing 'message' field in event parameters"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "detail"), [c[1:] for c in CREATE_ERRORS], ids=[c[0] for c in CREATE_ERRORS]
)
async def test_create_event_validation(
    fx: aiohttp.ClientSession, body: Any, status: int, detail: Any
) -> None:
    sid = await session_id(fx)
    path = f"api/sessions/{sid}/events/stream"
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with fx.post(path, **kwargs) as reply:
        assert reply.status == status
        got = (await reply.json())["detail"]
    assert isinstance(got, list) if detail is list else got == detail


async def test_unknown_session_is_400_on_stream_and_events(fx: aiohttp.ClientSession) -> None:
    status, reply = await post(fx, "api/sessions/0123456789/events/stream", message())
    assert (status, reply) == (400, {"detail": "Session with ID 0123456789 not found"})
    status, reply = await get(fx, "api/sessions/0123456789/events")
    detail = "Cannot list events for non-existent session with ID 0123456789"
    assert (status, reply) == (400, {"detail": detail})
    status, reply = await post(fx, "api/sessions/short/events/stream", message())
    assert status == 422


async def test_injected_5xx_on_the_initial_response(
    sim: Simulator, fx: aiohttp.ClientSession
) -> None:
    sid = await session_id(fx)
    sim.inject(status=503, count=1, path_prefix="/flux0/api/sessions/", method="POST")
    status, _ = await post(fx, f"api/sessions/{sid}/events/stream", message())
    assert status == 503
    sim.plan_next("complete", queue_delay=0, render_time=0)
    assert statuses(decode(await run(fx, sid)))[0] == "acknowledged"


async def test_client_disconnect_ends_the_run(sim: Simulator, fx: aiohttp.ClientSession) -> None:
    sid = await session_id(fx)
    sim.plan_next("draft")  # never starts: the stream would stay open forever
    path = f"api/sessions/{sid}/events/stream"
    async with fx.post(path, json=message()) as reply:
        assert statuses(decode([await anext(blocks(reply))])) == ["acknowledged"]
    # The handler notices the closed connection and returns; then the route is counted.
    route = "POST /flux0/api/sessions/{session_id}/events/stream"
    for _ in range(200):
        if sim.stats()["requests"]["by_route"].get(route):
            break
        await asyncio.sleep(0.01)
    assert sim.stats()["requests"]["by_route"][route] == 1
