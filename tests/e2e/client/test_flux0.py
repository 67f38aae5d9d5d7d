"""flux0 end to end: `AsyncClient` + `Flux0` + `pollkit.client._flux0.stream_run` against the
simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pollkit import AsyncClient, InvalidRequest, ServerError, Status
from pollkit.client._flux0 import stream_run
from pollkit.models import JobState
from pollkit.providers.flux0 import Flux0
from pollkit.sim import Simulator
from tests.e2e.sim.helpers import FLUX0_ID, MANUAL
from tests.helpers import FAST_RETRY


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(MANUAL) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(Flux0(base_url=sim.urls["flux0"]), retry=FAST_RETRY) as client:
        yield client


async def new_session(client: AsyncClient) -> str:
    provider = client.provider
    assert isinstance(provider, Flux0)
    agent = (await client.send(provider.create_agent_request("Drizzle", "echo"))).json()
    session = (await client.send(provider.create_session_request(agent["id"]))).json()
    return str(session["id"])


def quick(sim: Simulator, outcome: str = "complete") -> None:
    sim.plan_next(outcome, queue_delay=0, render_time=0)


async def test_a_run_is_streamed_mapped_and_its_message_read_back(
    sim: Simulator, client: AsyncClient
) -> None:
    sid = await new_session(client)
    quick(sim)
    seen: list[JobState] = []
    final = await stream_run(client, sid, "hello world", on_state=seen.append)
    assert final.status is Status.COMPLETE
    assert final.raw["text"] == "You said: hello world"
    assert final.raw["message"]["source"] == "ai_agent"
    assert final.job_id.startswith(f"{sid}/RID(")
    statuses = [s.status for s in seen]
    assert statuses[:2] == [Status.QUEUED, Status.QUEUED]  # stream open, then acknowledged
    assert set(statuses[2:-1]) == {Status.RENDERING}
    assert seen[-1] is final
    assert [s.raw["text"] for s in seen if s.native_status == "chunk"][-1] == final.raw["text"]
    # The same run, polled through the Provider contract, reads the same message.
    polled = await client.get(final.job_id)
    assert (polled.status, polled.raw["text"]) == (Status.COMPLETE, final.raw["text"])


@pytest.mark.parametrize(
    ("outcome", "status", "native"),
    [("error", Status.ERROR, "error"), ("canceled", Status.CANCELED, "cancelled")],
)
async def test_error_and_cancelled_runs(
    sim: Simulator, client: AsyncClient, outcome: str, status: Status, native: str
) -> None:
    sid = await new_session(client)
    quick(sim, outcome)
    final = await stream_run(client, sid, "hi")
    assert (final.status, final.native_status) == (status, native)
    if status is Status.ERROR:
        assert final.error is not None
        assert "simulated failure" in final.error.message
    assert "message" not in final.raw


async def test_unknown_session_is_400(client: AsyncClient) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await stream_run(client, "0123456789", "hi")
    assert caught.value.status_code == 400
    assert "Session with ID 0123456789 not found" in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_a_dropped_stream_is_an_error(sim: Simulator, client: AsyncClient) -> None:
    sid = await new_session(client)
    quick(sim)
    final = await stream_run(client, sid, "bye [sim:drop]")
    assert final.status is Status.ERROR
    assert final.error is not None
    assert final.error.message.startswith("stream dropped")


async def test_a_hanging_stream_ends_at_the_timeout_as_canceled(
    sim: Simulator, client: AsyncClient
) -> None:
    sid = await new_session(client)
    quick(sim)
    final = await stream_run(client, sid, "wait [sim:hang]", timeout=0.3)
    assert final.status is Status.CANCELED
    assert final.error is not None
    assert final.error.message == "client aborted"
    assert final.raw["text"] == "You said: wait [sim:hang]"  # every chunk arrived first


async def test_a_non_conforming_event_name_fails_loudly(
    sim: Simulator, client: AsyncClient
) -> None:
    sid = await new_session(client)
    quick(sim)
    final = await stream_run(client, sid, "[sim:bogus]")
    assert (final.status, final.native_status) == (Status.ERROR, "invalid_event")


async def test_transient_initial_errors_are_retried(sim: Simulator, client: AsyncClient) -> None:
    sid = await new_session(client)
    quick(sim)
    sim.inject(status=503, count=2, path_prefix="/flux0/api/sessions/", method="POST")
    final = await stream_run(client, sid, "again")
    assert final.status is Status.COMPLETE
    assert sim.stats()["requests"]["by_status"]["503"] == 2


async def test_initial_errors_beyond_the_retries_raise(sim: Simulator, client: AsyncClient) -> None:
    sid = await new_session(client)
    sim.inject(status=500, count=10, path_prefix="/flux0/api/sessions/", method="POST")
    with pytest.raises(ServerError):
        await stream_run(client, sid, "again")


async def test_the_run_follows_the_simulated_clock(sim: Simulator, client: AsyncClient) -> None:
    sid = await new_session(client)  # MANUAL: 100 s queued, 100 s rendering

    def advance(state: JobState) -> None:
        # Each step of the run moves the clock on, so the run unfolds without waiting.
        if state.native_status in ("acknowledged", "typing"):
            sim.clock.advance(100)

    final = await stream_run(client, sid, "step by step", on_state=advance)
    assert final.status is Status.COMPLETE
    assert final.raw["text"] == "You said: step by step"


async def test_sessions_users_and_stored_messages_through_the_provider(
    sim: Simulator, client: AsyncClient
) -> None:
    provider = client.provider
    assert isinstance(provider, Flux0)
    agent = (await client.send(provider.create_agent_request("Drizzle", "echo"))).json()
    session = (await client.send(provider.create_session_request(agent["id"]))).json()
    assert session["consumption_offsets"] == {"client": 0}
    assert FLUX0_ID.match(session["user_id"])
    quick(sim)
    final = await stream_run(client, session["id"], "hello")
    stored = provider.events(await client.send(provider.list_events_request(session["id"])))
    user_message = next(e for e in stored if e["source"] == "user")
    assert user_message["correlation_id"] == final.job_id.split("/", 1)[1]
    assert user_message["data"]["participant"] == {"id": session["user_id"], "name": "Anonymous"}
    assert (user_message["data"]["flagged"], user_message["data"]["tags"]) == (False, [])
    # Another login name is another user, with sessions of its own.
    other = Flux0(base_url=sim.urls["flux0"], user="ada")
    async with AsyncClient(other, retry=FAST_RETRY) as ada:
        hers = (await ada.send(other.create_session_request(agent["id"]))).json()
        listed = (await ada.send(other.list_sessions_request())).json()["data"]
    assert hers["user_id"] != session["user_id"]
    assert [s["id"] for s in listed] == [hers["id"]]


async def test_a_422_carries_pydantics_details(client: AsyncClient) -> None:
    provider = client.provider
    assert isinstance(provider, Flux0)
    agent = (await client.send(provider.create_agent_request("Drizzle", "echo"))).json()
    with pytest.raises(InvalidRequest) as caught:
        await client.send(provider.create_session_request(agent["id"], session_id="short"))
    assert caught.value.status_code == 422
    assert caught.value.details == [
        {
            "type": "string_too_short",
            "loc": ["body", "id"],
            "msg": "String should have at least 10 characters",
            "input": "short",
            "ctx": {"min_length": 10},
        }
    ]
