"""The Magic Hour dialect: reply shapes, lifecycle, auth, validation and deletion."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from pollkit.sim import Scenario, Simulator
from tests.e2e.sim.helpers import (
    ANIMATION_BODY,
    IMAGE_BODY,
    MANUAL,
    VIDEO_BODY,
    create,
    get_project,
)

IMAGE_KEYS = {
    "id", "name", "status", "type", "image_count", "created_at", "enabled",
    "credits_charged", "total_frame_cost", "downloads", "error",
}  # fmt: skip
VIDEO_KEYS = {
    "id", "name", "status", "type", "created_at", "enabled", "credits_charged",
    "total_frame_cost", "start_seconds", "end_seconds", "fps", "width", "height",
    "downloads", "download", "error",
}  # fmt: skip
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CUID = re.compile(r"^c[0-9a-z]{24}$")


@pytest.mark.parametrize(
    ("path", "body", "cost_key", "credits"),
    [
        ("/v1/ai-image-generator", IMAGE_BODY, "frame_cost", 10),
        ("/v1/text-to-video", VIDEO_BODY, "estimated_frame_cost", 450),
        ("/v1/animation", ANIMATION_BODY, "estimated_frame_cost", 36),
    ],
)
async def test_create_replies_200_with_id_and_costs(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any], cost_key: str, credits: int
) -> None:
    async with http.post(path, json=body) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        reply = await response.json()
    assert set(reply) == {"id", "credits_charged", cost_key}
    assert CUID.match(reply["id"])
    assert reply["credits_charged"] == reply[cost_key] == credits


async def test_image_project_has_every_key(http: aiohttp.ClientSession) -> None:
    job_id = await create(http, "/v1/ai-image-generator", {**IMAGE_BODY, "name": "harbour"})
    project = await get_project(http, "image", job_id)
    assert set(project) == IMAGE_KEYS
    assert project["id"] == job_id
    assert project["name"] == "harbour"
    assert project["type"] == "AI_IMAGE"
    assert project["image_count"] == 2
    assert project["enabled"] is True
    assert project["downloads"] == []
    assert project["error"] is None
    assert ISO_MILLIS.match(project["created_at"])


@pytest.mark.parametrize(
    ("path", "body", "type_", "expected"),
    [
        ("/v1/text-to-video", VIDEO_BODY, "TEXT_TO_VIDEO", (5.0, 24.0, 1280, 720)),
        ("/v1/animation", ANIMATION_BODY, "ANIMATION", (3.0, 12.0, 512, 512)),
    ],
)
async def test_video_project_has_every_key(
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    type_: str,
    expected: tuple[float, float, int, int],
) -> None:
    job_id = await create(http, path, body)
    project = await get_project(http, "video", job_id)
    assert set(project) == VIDEO_KEYS
    assert project["type"] == type_
    assert project["name"] is None
    assert project["start_seconds"] == 0.0
    assert (project["end_seconds"], project["fps"], project["width"], project["height"]) == expected
    assert project["download"] is None
    assert project["total_frame_cost"] == project["credits_charged"]


async def test_lifecycle_queued_rendering_complete(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.plan_next(outcome="complete", queue_delay=10, render_time=20)
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    assert (await get_project(http, "image", job_id))["status"] == "queued"
    sim.clock.advance(10)
    assert (await get_project(http, "image", job_id))["status"] == "rendering"
    assert sim.stats()["jobs"][0]["finished_at"] is None
    sim.clock.advance(20)
    project = await get_project(http, "image", job_id)
    assert project["status"] == "complete"
    assert len(project["downloads"]) == 2
    for download in project["downloads"]:
        assert set(download) == {"url", "expires_at"}
        assert download["url"].startswith(f"{sim.url}/_sim/files/{job_id}/output-")
        assert ISO_MILLIS.match(download["expires_at"])
    row = sim.stats()["jobs"][0]
    assert row["status"] == "complete"
    assert row["finished_at"] == pytest.approx(row["created_at"] + 30)
    assert row["status_requests"] == 3


async def test_video_download_repeats_the_first_entry(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    job_id = await create(http, "/v1/text-to-video", VIDEO_BODY)
    project = await get_project(http, "video", job_id)
    assert project["status"] == "complete"
    assert len(project["downloads"]) == 1
    assert project["download"] == project["downloads"][0]
    assert project["download"]["url"].split("?")[0].endswith("/output-0.mp4")


async def test_error_refunds_credits(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.plan_next(outcome="error", queue_delay=1, render_time=1)
    job_id = await create(http, "/v1/text-to-video", VIDEO_BODY)
    assert (await get_project(http, "video", job_id))["credits_charged"] == 450
    sim.clock.advance(2)
    project = await get_project(http, "video", job_id)
    assert project["status"] == "error"
    assert project["error"] == {
        "code": "render_failed",
        "message": "The render could not be completed",
    }
    assert project["credits_charged"] == project["total_frame_cost"] == 0
    assert project["downloads"] == []
    assert project["download"] is None


async def test_planned_cancel_and_draft(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.plan_next(outcome="canceled", queue_delay=1, render_time=1)
    sim.plan_next(outcome="draft")
    canceled = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    draft = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    sim.clock.advance(10_000)
    assert (await get_project(http, "image", canceled))["status"] == "canceled"
    assert (await get_project(http, "image", draft))["status"] == "draft"


async def test_user_cancel_from_the_web_app(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.plan_next(outcome="complete", queue_delay=5, render_time=5, count=2)
    first = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    second = await create(http, "/v1/text-to-video", VIDEO_BODY)
    sim.clock.advance(6)
    assert sim.cancel(first) == "canceled"
    async with http.post(f"/_sim/jobs/{second}/cancel") as response:
        assert response.status == 200
        assert await response.json() == {"id": second, "status": "canceled"}
    sim.clock.advance(100)
    assert (await get_project(http, "image", first))["status"] == "canceled"
    assert (await get_project(http, "video", second))["status"] == "canceled"
    # A finished job stays finished.
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    done = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    assert sim.cancel(done) == "complete"
    with pytest.raises(KeyError):
        sim.cancel("cnope")
    async with http.post("/_sim/jobs/cnope/cancel") as response:
        assert response.status == 404


async def test_outcomes_follow_the_scenario_rates() -> None:
    scenario = Scenario(seed=3, time_scale=1.0, queue_delay=0, render_time=0, failure_rate=0.3)
    async with Simulator(scenario) as sim:
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
            for _ in range(40):
                await create(http, "/v1/ai-image-generator", {**IMAGE_BODY, "image_count": 1})
        outcomes = [job["status"] for job in sim.stats()["jobs"]]
    assert 3 <= outcomes.count("error") <= 25
    assert set(outcomes) == {"complete", "error"}


async def test_ids_and_durations_are_deterministic_from_the_seed() -> None:
    async def run() -> list[tuple[str, float, float]]:
        async with Simulator(MANUAL.replace(queue_delay=(1, 5), render_time=(1, 9))) as sim:
            headers = {"Authorization": f"Bearer {sim.api_key}"}
            async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
                for _ in range(3):
                    await create(http, "/v1/text-to-video", VIDEO_BODY)
            jobs = sim.stats()["jobs"]
        return [(job["id"], job["queue_delay"], job["render_time"]) for job in jobs]

    first, second = await run(), await run()
    assert first == second
    assert len({job_id for job_id, _, _ in first}) == 3
    assert all(1 <= queue <= 5 and 1 <= render <= 9 for _, queue, render in first)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic mhk_test_key"}],
)
async def test_401_is_checked_before_404(
    sim: Simulator, method: str, headers: dict[str, str]
) -> None:
    async with (
        aiohttp.ClientSession(base_url=sim.url) as session,
        session.request(method, "/v1/image-projects/cdoesnotexist", headers=headers) as response,
    ):
        assert response.status == 401
        assert response.content_type == "application/json"
        assert await response.json() == {"message": "Unauthorized"}


async def test_create_without_key_is_401(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession(base_url=sim.url) as session,
        session.post("/v1/ai-image-generator", json=IMAGE_BODY) as response,
    ):
        assert response.status == 401


async def test_unknown_id_and_wrong_kind_are_404(http: aiohttp.ClientSession) -> None:
    image = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    for path in ("/v1/image-projects/cdoesnotexist", f"/v1/video-projects/{image}"):
        async with http.get(path) as response:
            assert response.status == 404
            assert response.content_type == "application/json"
            assert await response.json() == {"message": "Not Found"}


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"null"])
async def test_missing_body_is_400(http: aiohttp.ClientSession, raw: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post("/v1/ai-image-generator", data=raw, headers=headers) as response:
        assert response.status == 400
        assert await response.json() == {"message": "Missing request body"}


def _without(body: dict[str, Any], dotted: str) -> dict[str, Any]:
    copy = {key: dict(value) if isinstance(value, dict) else value for key, value in body.items()}
    *parents, last = dotted.split(".")
    node = copy
    for parent in parents:
        node = node[parent]
    del node[last]
    return copy


def _with(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    copy = {key: dict(item) if isinstance(item, dict) else item for key, item in body.items()}
    *parents, last = dotted.split(".")
    node = copy
    for parent in parents:
        node = node[parent]
    node[last] = value
    return copy


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/ai-image-generator", _without(IMAGE_BODY, "image_count"), "image_count"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "image_count", 17), "image_count"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "image_count", 0), "image_count"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "image_count", "2"), "image_count"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "image_count", True), "image_count"),
        ("/v1/ai-image-generator", _without(IMAGE_BODY, "style"), "style"),
        ("/v1/ai-image-generator", _without(IMAGE_BODY, "style.prompt"), "style.prompt"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "style.prompt", 3), "style.prompt"),
        ("/v1/ai-image-generator", _with(IMAGE_BODY, "model", 3), "model"),
        ("/v1/text-to-video", _without(VIDEO_BODY, "end_seconds"), "end_seconds"),
        ("/v1/text-to-video", _with(VIDEO_BODY, "end_seconds", 61), "end_seconds"),
        ("/v1/text-to-video", _with(VIDEO_BODY, "end_seconds", 0.5), "end_seconds"),
        ("/v1/text-to-video", _without(VIDEO_BODY, "style.prompt"), "style.prompt"),
        ("/v1/text-to-video", _with(VIDEO_BODY, "audio", "yes"), "audio"),
        ("/v1/animation", _without(ANIMATION_BODY, "fps"), "fps"),
        ("/v1/animation", _with(ANIMATION_BODY, "fps", 0), "fps"),
        ("/v1/animation", _without(ANIMATION_BODY, "end_seconds"), "end_seconds"),
        ("/v1/animation", _with(ANIMATION_BODY, "width", 63), "width"),
        ("/v1/animation", _with(ANIMATION_BODY, "height", 64.5), "height"),
        ("/v1/animation", _without(ANIMATION_BODY, "style.art_style"), "style.art_style"),
        ("/v1/animation", _with(ANIMATION_BODY, "style.art_style", "Custom"), "art_style_custom"),
        ("/v1/animation", _without(ANIMATION_BODY, "style.camera_effect"), "camera_effect"),
        ("/v1/animation", _without(ANIMATION_BODY, "style.prompt_type"), "style.prompt_type"),
        ("/v1/animation", _without(ANIMATION_BODY, "style.prompt"), "style.prompt"),
        ("/v1/animation", _with(ANIMATION_BODY, "style.transition_speed", 11), "transition_speed"),
        ("/v1/animation", _without(ANIMATION_BODY, "assets.audio_source"), "audio_source"),
        ("/v1/animation", _with(ANIMATION_BODY, "assets.audio_source", "file"), "audio_file_path"),
        ("/v1/animation", _without(ANIMATION_BODY, "assets"), "assets"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(
    sim: Simulator, http: aiohttp.ClientSession, path: str, body: dict[str, Any], field: str
) -> None:
    async with http.post(path, json=body) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        reply = await response.json()
    assert set(reply) == {"message"}
    assert field in reply["message"]
    assert sim.stats()["jobs"] == []


async def test_enum_like_fields_accept_any_string(http: aiohttp.ClientSession) -> None:
    body = {**VIDEO_BODY, "model": "brand-new-model-9", "resolution": "8k", "aspect_ratio": "9:16"}
    job_id = await create(http, "/v1/text-to-video", body)
    project = await get_project(http, "video", job_id)
    assert (project["width"], project["height"]) == (720, 1280)


@pytest.mark.parametrize("kind", ["image", "video"])
async def test_delete_is_204_and_later_reads_show_disabled(
    sim: Simulator, http: aiohttp.ClientSession, kind: str
) -> None:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    path = "/v1/ai-image-generator" if kind == "image" else "/v1/text-to-video"
    job_id = await create(http, path, IMAGE_BODY if kind == "image" else VIDEO_BODY)
    url = (await get_project(http, kind, job_id))["downloads"][0]["url"]
    async with http.delete(f"/v1/{kind}-projects/{job_id}") as response:
        assert response.status == 204
        assert await response.read() == b""
    project = await get_project(http, kind, job_id)
    assert project["enabled"] is False
    assert project["status"] == "complete"
    assert project["downloads"] == []
    async with http.get(url) as response:
        assert response.status == 404  # the rendered files are gone
    assert sim.stats()["jobs"][0]["deleted"] is True


async def test_deleting_an_unfinished_project_stops_it(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    async with http.delete(f"/v1/image-projects/{job_id}") as response:
        assert response.status == 204
    sim.clock.advance(10_000)
    assert (await get_project(http, "image", job_id))["status"] == "canceled"


@pytest.mark.parametrize("scenario", [MANUAL.replace(deleted_read="not_found")])
async def test_delete_then_read_404_mode(http: aiohttp.ClientSession) -> None:
    job_id = await create(http, "/v1/text-to-video", VIDEO_BODY)
    async with http.delete(f"/v1/video-projects/{job_id}") as response:
        assert response.status == 204
    async with http.get(f"/v1/video-projects/{job_id}") as response:
        assert response.status == 404
        assert await response.json() == {"message": "Not Found"}
    async with http.delete(f"/v1/video-projects/{job_id}") as response:
        assert response.status == 404


async def test_unknown_routes_answer_json(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/nothing-here") as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        assert "message" in await response.json()
    async with http.put("/v1/ai-image-generator", json={}) as response:
        assert response.status == 405
        assert response.content_type == "application/json"
