"""Replies the real servers write, pinned over raw HTTP (docs/simulator-fidelity.md has the
upstream file behind each): flux0's sessions, users, stored user messages and pydantic 422s,
and the PiXYZ Scheduler's process documentation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pollkit.sim import Simulator
from tests.e2e.sim.helpers import FLUX0_ID


@pytest.fixture
async def fx(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=sim.urls["flux0"] + "/") as session:
        yield session


async def post(fx: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with fx.post(path, json=body) as reply:
        return reply.status, await reply.json()


async def new_session(fx: aiohttp.ClientSession) -> dict[str, Any]:
    _, agent = await post(fx, "api/agents", {"name": "Drizzle", "type": "echo"})
    status, session = await post(fx, "api/sessions", {"agent_id": agent["id"]})
    assert status == 201
    return dict(session)


# -- flux0 -------------------------------------------------------------------------------------


async def test_a_new_session_has_the_client_offset_and_a_generated_user_id(
    fx: aiohttp.ClientSession,
) -> None:
    session = await new_session(fx)
    assert session["consumption_offsets"] == {"client": 0}
    assert FLUX0_ID.match(session["user_id"])
    assert session["user_id"] != "anonymous"
    assert session["created_at"].endswith("Z")  # pydantic's spelling of UTC
    assert list(session) == ["id", "agent_id", "user_id", "consumption_offsets", "created_at"]


async def test_ids_are_drawn_like_the_servers(fx: aiohttp.ClientSession) -> None:
    ids = [(await post(fx, "api/agents", {"name": "A", "type": "t"}))[1]["id"] for _ in range(60)]
    assert all(FLUX0_ID.match(new) for new in ids)
    assert len(set(ids)) == len(ids)
    # nanoid's "-" is kept inside an id (the seeded draw has some), "_" never is.
    assert any("-" in new for new in ids)


async def test_a_stored_user_message_carries_participant_flag_and_tags(
    sim: Simulator, fx: aiohttp.ClientSession
) -> None:
    session = await new_session(fx)
    sim.plan_next("complete", queue_delay=0, render_time=0)
    path = f"api/sessions/{session['id']}/events/stream"
    async with fx.post(path, json={"type": "message", "source": "user", "content": "hi"}) as reply:
        assert reply.status == 200
        await reply.read()
    async with fx.get(f"api/sessions/{session['id']}/events", params={"source": "user"}) as reply:
        stored = (await reply.json())["data"]
    assert len(stored) == 1
    event = stored[0]
    assert list(event) == [
        "id", "correlation_id", "type", "source", "offset", "data", "deleted", "metadata",
        "created_at",
    ]  # fmt: skip
    assert event["metadata"] is None
    # The response model's field order, with the participant the session's user.
    assert event["data"] == {
        "type": "message",
        "tags": [],
        "flagged": False,
        "parts": [{"type": "content", "content": "hi"}],
        "participant": {"id": session["user_id"], "name": "Anonymous"},
    }
    assert list(event["data"]) == ["type", "tags", "flagged", "parts", "participant"]


async def test_an_empty_agent_name_is_pydantics_own_422(fx: aiohttp.ClientSession) -> None:
    assert await post(fx, "api/agents", {"name": "", "type": "echo"}) == (
        422,
        {
            "detail": [
                {
                    "type": "string_too_short",
                    "loc": ["body", "name"],
                    "msg": "String should have at least 1 character",
                    "input": "",
                    "ctx": {"min_length": 1},
                }
            ]
        },
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"name": "x" * 101, "type": "t"},
            {
                "type": "string_too_long",
                "loc": ["body", "name"],
                "msg": "String should have at most 100 characters",
                "input": "x" * 101,
                "ctx": {"max_length": 100},
            },
        ),
        (
            {"type": "t"},
            {
                "type": "missing",
                "loc": ["body", "name"],
                "msg": "Field required",
                "input": {"type": "t"},
            },
        ),
        (
            {"name": "A", "type": "t", "colour": "red"},
            {
                "type": "extra_forbidden",
                "loc": ["body", "colour"],
                "msg": "Extra inputs are not permitted",
                "input": "red",
            },
        ),
        (
            [],
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": [],
            },
        ),
    ],
)
async def test_agent_body_errors_in_pydantics_words(
    fx: aiohttp.ClientSession, body: Any, expected: dict[str, Any]
) -> None:
    assert await post(fx, "api/agents", body) == (422, {"detail": [expected]})


async def test_undecodable_json_is_fastapis_json_invalid(fx: aiohttp.ClientSession) -> None:
    headers = {"Content-Type": "application/json"}
    async with fx.post("api/agents", data=b'{"name": ', headers=headers) as reply:
        assert reply.status == 422
        assert await reply.json() == {
            "detail": [
                {
                    "type": "json_invalid",
                    "loc": ["body", 9],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting value"},
                }
            ]
        }


async def test_path_query_and_body_errors_come_together_path_first(
    fx: aiohttp.ClientSession,
) -> None:
    status, reply = await post(fx, "api/sessions/short/events/stream", {"type": "nope"})
    assert status == 422
    assert [(e["type"], e["loc"]) for e in reply["detail"]] == [
        ("string_too_short", ["path", "session_id"]),
        ("enum", ["body", "type"]),
        ("missing", ["body", "source"]),
    ]
    assert reply["detail"][0]["msg"] == "String should have at least 10 characters"
    assert reply["detail"][1]["msg"] == "Input should be 'message', 'tool', 'status' or 'custom'"
    session = await new_session(fx)
    async with fx.get(f"api/sessions/{session['id']}/events", params={"min_offset": "x"}) as got:
        assert got.status == 422
        assert (await got.json())["detail"] == [
            {
                "type": "int_parsing",
                "loc": ["query", "min_offset"],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": "x",
            }
        ]


# -- PiXYZ Scheduler ---------------------------------------------------------------------------

THUMBS_PARAMS = (
    "Parameters\n{\n'width': 1920, [optional] output images width (default: 512)\n"
    "'height': 1080, [optional] output images height (default: 512)\n}"
)
UPSTREAM_DOCS = {
    "api_test": "Test the PixyzScheduler API by returning a simple string",
    "convert_file": "None",
    "generate_metadata": "Generate metadata for a model.\n\nOutputs a metadata.json file in the "
    "output directory and returns the metadata as a dictionary.",
    "generate_thumbnails": "Generate png thumbnails [iso,x,y,z], preview.glb and metadata.json "
    f"for the given file\n\n{THUMBS_PARAMS} ",
    "sleep": "None",
    "thumbnail_chained": "Generate png thumbnails [iso,x,y,z], preview.glb and metadata.json for "
    "the given file: DAG version -> CPU task (load, metadata, glb, export to GLB) -> GPU task "
    f"(screenshot)\n\n{THUMBS_PARAMS}",
}


@pytest.mark.parametrize(("name", "text"), sorted(UPSTREAM_DOCS.items()))
async def test_process_docs_are_upstreams(sim: Simulator, name: str, text: str) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{sim.urls['pixyz']}/processes/{name}") as reply,
    ):
        assert reply.status == 200
        assert await reply.json() == {"doc": f"Process '{name}' documentation:\n\n{text}"}


async def test_a_process_without_main_is_the_wrapped_404(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{sim.urls['pixyz']}/processes/__init__") as reply,
    ):
        assert reply.status == 500
        inner = (
            "{'code': 404, 'message': 'Not Found', "
            "'details': \"No documentation found for '__init__' process\"}"
        )
        assert await reply.json() == {
            "detail": {
                "code": 500,
                "message": "Internal Server Error",
                "details": f"HTTPException: 404: {inner}",
            }
        }
