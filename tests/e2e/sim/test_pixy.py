"""The Pixy dialect: reply shapes, the two status fields, progress and logs, lists, updates,
soft deletes, errors and webhooks (docs/apis/pixy.md)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pollkit.sim import Scenario, Simulator
from tests.e2e.sim.helpers import MANUAL, parse_png

IMAGES = "/v1/apps/imagine/imagination/"
VIDEOS = "/v1/apps/videogen/videos/"
SUBTITLES = "/v1/apps/subtitle/subtitles/"
IMAGE_KEYS = [
    "created_at", "updated_at", "is_deleted", "meta_data", "uid", "user_id", "task_status",
    "task_report", "task_progress", "task_logs", "task_references", "task_start_at",
    "task_end_at", "webhook_url", "engine", "aspect_ratio", "delineation", "context",
    "enhance_prompt", "prompt", "error", "bulk", "status", "results", "usage_id",
]  # fmt: skip
NAIVE_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The server's fixed pairing of the two fields (docs/apis/pixy.md#the-two-status-fields).
PAIRS = {
    "init": "init",
    "queue": "processing",
    "running": "processing",
    "processing": "processing",
    "completed": "completed",
    "error": "error",
    "cancelled": "completed",
}
IMAGE = {"engine": "photon_flash", "delineation": "a red kite over the sea"}
VIDEO = {"engine": "klingtext", "user_prompt": "a paper boat"}
SUBTITLE = {"url": "https://media.example/talk.mp4", "target_language": "French"}


@pytest.fixture
async def px(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session on the Pixy prefix that sends the right key."""
    base = sim.urls["pixy"] + "/"
    headers = {"x-api-key": sim.api_key}
    async with aiohttp.ClientSession(base_url=base, headers=headers) as session:
        yield session


def rel(path: str) -> str:
    return path.lstrip("/")


async def create(px: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with px.post(rel(path), json=body) as reply:
        assert reply.status == 201, await reply.text()
        item: dict[str, Any] = await reply.json()
    return item


async def read(px: aiohttp.ClientSession, path: str, uid: str) -> dict[str, Any]:
    async with px.get(rel(path) + uid) as reply:
        assert reply.status == 200, await reply.text()
        item: dict[str, Any] = await reply.json()
    return item


async def test_verify_accepts_only_the_key_and_needs_no_header(sim: Simulator) -> None:
    url = sim.urls["pixy"] + "/api_key/verify"
    async with aiohttp.ClientSession() as plain:
        async with plain.post(url, json={"api_key": sim.api_key}) as reply:
            assert (reply.status, await reply.json()) == (200, {})
        async with plain.post(url, json={"api_key": "wrong"}) as reply:
            assert reply.status == 401
        async with plain.post(url, json={}) as reply:
            assert reply.status == 422
            assert (await reply.json())["detail"][0]["loc"] == ["body", "api_key"]


async def test_create_answers_201_init_with_the_keys_in_order(
    px: aiohttp.ClientSession,
) -> None:
    item = await create(px, IMAGES, IMAGE)
    assert list(item) == IMAGE_KEYS
    assert (item["status"], item["task_status"], item["task_progress"]) == ("init", "init", -1)
    assert item["results"] is None
    assert item["task_logs"] == []
    assert item["is_deleted"] is False
    assert UUID.match(item["uid"])
    assert re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-", item["user_id"])  # made up
    assert NAIVE_MICROS.match(item["created_at"])
    assert NAIVE_MICROS.match(item["updated_at"])
    assert (item["engine"], item["aspect_ratio"], item["delineation"]) == (
        "photon_flash",
        "1:1",
        "a red kite over the sea",
    )


@pytest.mark.parametrize(("path", "body"), [(VIDEOS, VIDEO), (SUBTITLES, SUBTITLE)])
async def test_video_and_subtitle_items_share_the_envelope_without_status(
    px: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    item = await create(px, path, body)
    envelope = IMAGE_KEYS[: IMAGE_KEYS.index("webhook_url") + 1]
    keys = list(item)
    assert keys[: len(envelope) + 1] == [*envelope[:-1], "task_order_score", "webhook_url"]
    assert "status" not in item
    assert (item["task_status"], item["task_progress"], item["results"]) == ("init", -1, None)
    for key, value in body.items():
        assert item[key] == value


async def test_lifecycle_keeps_fields_in_step_progress_rising_and_logs_growing(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    sim.plan_next("complete", queue_delay=10, render_time=50)
    item = await create(px, IMAGES, {**IMAGE, "engine": "midjourney", "aspect_ratio": "16:9"})
    seen = [item]
    for _ in range(14):
        sim.clock.advance(5)
        seen.append(await read(px, IMAGES, item["uid"]))
    statuses = [i["status"] for i in seen]
    assert statuses[0] == "init"
    assert {"queue", "running", "processing"} <= set(statuses)
    assert statuses[-1] == "completed"
    for one in seen:
        assert PAIRS[one["status"]] == one["task_status"]
    progress = [i["task_progress"] for i in seen]
    assert progress == sorted(progress)
    assert progress[0] == -1
    assert progress[-1] == 100
    assert len(set(progress)) >= 5  # rises step by step with the render
    logs = [len(i["task_logs"]) for i in seen]
    assert logs == sorted(logs)
    for before, after in itertools.pairwise(seen):
        if (before["status"], before["task_progress"]) != (after["status"], after["task_progress"]):
            assert len(after["task_logs"]) > len(before["task_logs"])
            assert after["updated_at"] > before["updated_at"]
    final = seen[-1]
    assert final["task_report"] == "midjourney completed."
    assert "midjourney has been requested." in [e["message"] for e in final["task_logs"]]
    entry = final["task_logs"][-1]
    assert set(entry) == {"reported_at", "message", "task_status", "duration", "log_type"}
    assert NAIVE_MICROS.match(entry["reported_at"])
    assert entry["duration"] == 60
    assert len(final["results"]) == 4  # Midjourney yields four images
    async with aiohttp.ClientSession() as plain:
        for result in final["results"]:
            async with plain.get(result["url"]) as reply:
                width, height, _ = parse_png(await reply.read())
            assert (width, height) == (result["width"], result["height"])
            assert width > height  # 16:9


async def test_failure_reports_imagine_failed_with_the_error(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    sim.plan_next("error", queue_delay=1, render_time=1)
    item = await create(px, IMAGES, IMAGE)
    sim.clock.advance(5)
    failed = await read(px, IMAGES, item["uid"])
    assert (failed["status"], failed["task_status"]) == ("error", "error")
    assert failed["error"]
    assert failed["task_report"] == f"Imagine failed, {failed['error']}"
    assert failed["meta_data"] == {"retry_count": 5}
    assert failed["results"] is None
    assert failed["task_logs"][-1]["log_type"] == "error"


async def test_cancel_reads_cancelled_and_completed_on_images_error_on_videos(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    image = await create(px, IMAGES, IMAGE)
    video = await create(px, VIDEOS, VIDEO)
    sim.clock.advance(150)  # both rendering
    async with aiohttp.ClientSession() as plain:
        for uid in (image["uid"], video["uid"]):
            async with plain.post(f"{sim.url}/_sim/jobs/{uid}/cancel") as reply:
                assert (await reply.json())["status"] == "canceled"
    sim.clock.advance(1000)
    got = await read(px, IMAGES, image["uid"])
    assert (got["status"], got["task_status"], got["results"]) == ("cancelled", "completed", None)
    assert got["task_progress"] >= 0
    got = await read(px, VIDEOS, video["uid"])
    assert (got["task_status"], got["error"]) == ("error", "cancelled")


async def test_outputs_are_pngs_mp4_and_srt_listed_in_stats(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    items = [
        await create(px, IMAGES, IMAGE),
        await create(px, VIDEOS, VIDEO),
        await create(px, SUBTITLES, SUBTITLE),
    ]
    sim.clock.advance(1000)
    stats = {job["id"]: job for job in sim.stats()["jobs"]}
    async with aiohttp.ClientSession() as plain:
        for item, path in zip(items, (IMAGES, VIDEOS, SUBTITLES), strict=True):
            done = await read(px, path, item["uid"])
            (result,) = done["results"]
            async with plain.get(result["url"]) as reply:
                data = await reply.read()
            assert stats[item["uid"]]["dialect"] == "pixy"
            assert stats[item["uid"]]["outputs"][0]["sha256"] == hashlib.sha256(data).hexdigest()
            if path == IMAGES:
                assert parse_png(data)[:2] == (result["width"], result["height"])
            elif path == VIDEOS:
                assert data[4:8] == b"ftyp"
            else:
                assert data.startswith(b"1\n00:00:00,000 --> ")
                assert b"[French]" in data


async def test_pages_newest_first_with_totals_filters_and_422(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    made = [await create(px, IMAGES, {**IMAGE, "delineation": f"p{i}"}) for i in range(105)]
    await create(px, VIDEOS, VIDEO)  # another collection: never listed with images
    newest_first = [i["uid"] for i in reversed(made)]
    async with px.get(rel(IMAGES), params={"offset": 0, "limit": 100}) as reply:
        first = await reply.json()
    async with px.get(rel(IMAGES), params={"offset": 100, "limit": 100}) as reply:
        second = await reply.json()
    assert (first["total"], first["offset"], first["limit"]) == (105, 0, 100)
    assert [i["uid"] for i in first["items"] + second["items"]] == newest_first
    async with px.get(rel(IMAGES)) as reply:
        default = await reply.json()
    assert (len(default["items"]), default["limit"], default["offset"]) == (10, 10, 0)
    window = {"created_at_from": made[3]["created_at"], "created_at_to": made[5]["created_at"]}
    async with px.get(rel(IMAGES), params=window) as reply:
        bounded = await reply.json()
    assert [i["uid"] for i in bounded["items"]] == [made[5]["uid"], made[4]["uid"], made[3]["uid"]]
    assert bounded["total"] == 3
    for params, field in [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"created_at_from": "yesterday"}, "created_at_from"),
    ]:
        async with px.get(rel(IMAGES), params=params) as reply:
            assert reply.status == 422
            (error,) = (await reply.json())["detail"]
            assert error["loc"] == ["query", field]
            assert error["msg"]


async def test_soft_delete_hides_the_item_from_reads_lists_and_totals(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    keep = await create(px, IMAGES, IMAGE)
    gone = await create(px, IMAGES, IMAGE)
    sim.clock.advance(60)
    async with px.delete(rel(IMAGES) + gone["uid"]) as reply:
        assert reply.status == 200
        deleted = await reply.json()
    assert deleted["is_deleted"] is True
    assert deleted["status"] == "queue"  # as it was: the delete does not rewrite it
    async with px.get(rel(IMAGES) + gone["uid"]) as reply:
        assert reply.status == 404
        assert await reply.json() == {"message": "Imagination not found", "error": "item_not_found"}
    async with px.delete(rel(IMAGES) + gone["uid"]) as reply:
        assert reply.status == 404
    async with px.get(rel(IMAGES)) as reply:
        page = await reply.json()
    assert [i["uid"] for i in page["items"]] == [keep["uid"]]
    assert page["total"] == 1
    (row,) = [j for j in sim.stats()["jobs"] if j["id"] == gone["uid"]]
    assert row["deleted"] is True


async def test_errors_uid_not_uuid_unknown_uid_wrong_key_bad_bodies(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    async with aiohttp.ClientSession() as plain:  # no key: the route does not even match
        async with plain.get(f"{sim.urls['pixy']}{IMAGES}not-a-uuid") as reply:
            assert (reply.status, await reply.json()) == (404, {"detail": "Not Found"})
        async with plain.get(f"{sim.urls['pixy']}{IMAGES}") as reply:
            assert reply.status == 401
        bad = {"x-api-key": "wrong"}
        async with plain.post(f"{sim.urls['pixy']}{IMAGES}", json=IMAGE, headers=bad) as reply:
            assert reply.status == 401
    async with px.get(rel(VIDEOS) + "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10") as reply:
        assert reply.status == 404
        assert await reply.json() == {"message": "Video not found", "error": "item_not_found"}
    image = await create(px, IMAGES, IMAGE)
    async with px.get(rel(VIDEOS) + image["uid"]) as reply:  # an image is not a video
        assert reply.status == 404
    for path, body, field in [
        (IMAGES, {**IMAGE, "engine": "dalle", "aspect_ratio": "16:9"}, []),
        (IMAGES, {"engine": "photon"}, ["delineation"]),
        (VIDEOS, {"engine": "kling", "user_prompt": "x"}, []),
        (VIDEOS, {**VIDEO, "image_url": "https://x.test/a.png"}, []),
        (SUBTITLES, {**SUBTITLE, "target_language": "Klingon"}, []),
    ]:
        async with px.post(rel(path), json=body) as reply:
            assert reply.status == 422, body
            detail = (await reply.json())["detail"]
            assert detail[0]["loc"] == ["body", *field]
    async with px.post(rel(IMAGES), data=b"{not json") as reply:
        assert reply.status == 422
    assert len([j for j in sim.stats()["jobs"] if j["dialect"] == "pixy"]) == 1


async def test_patch_answers_405_when_the_route_is_disabled(
    px: aiohttp.ClientSession,
) -> None:
    item = await create(px, IMAGES, IMAGE)
    async with px.patch(rel(IMAGES) + item["uid"], json={"meta_data": {"a": 1}}) as reply:
        assert (reply.status, await reply.json()) == (405, {"detail": "Method Not Allowed"})
    assert (await read(px, IMAGES, item["uid"]))["meta_data"] is None


@pytest.mark.parametrize("scenario", [MANUAL.replace(pixy_update="enabled")])
async def test_patch_updates_fields_and_ignores_ids_and_unknown_keys(
    sim: Simulator, px: aiohttp.ClientSession
) -> None:
    item = await create(px, IMAGES, IMAGE)
    sim.clock.advance(1)
    change = {
        "meta_data": {"batch": "b1"},
        "delineation": "a green kite",
        "uid": "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10",
        "created_at": "2000-01-01T00:00:00.000000",
        "user_id": "someone",
        "colour": "blue",
    }
    async with px.patch(rel(IMAGES) + item["uid"], json=change) as reply:
        assert reply.status == 200
        updated = await reply.json()
    assert (updated["uid"], updated["created_at"]) == (item["uid"], item["created_at"])
    assert updated["user_id"] == item["user_id"]
    assert (updated["meta_data"], updated["delineation"]) == ({"batch": "b1"}, "a green kite")
    assert "colour" not in updated
    assert updated["updated_at"] > item["updated_at"]
    assert await read(px, IMAGES, item["uid"]) == updated
    async with px.patch(rel(IMAGES) + item["uid"], json=["not", "an", "object"]) as reply:
        assert reply.status == 422


# -- webhooks -----------------------------------------------------------------------------------


class Receiver:
    """A tiny aiohttp server that records the webhook calls it gets."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.changed = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.calls.setdefault(request.path, []).append(await request.json())
        self.changed.set()
        return web.json_response({})

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield hook
    await runner.cleanup()


def finished(calls: list[dict[str, Any]]) -> bool:
    return bool(calls) and calls[-1]["task_status"] in ("completed", "error")


async def test_webhooks_post_the_whole_item_on_every_save_to_every_target(
    sim: Simulator, px: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.plan_next("complete", queue_delay=10, render_time=50)
    body = {
        **VIDEO,
        "webhook_url": f"{receiver.url}/direct",
        "meta_data": {"webhook": f"{receiver.url}/meta"},
    }
    item = await create(px, VIDEOS, body)
    for _ in range(8):  # step through the saves, a few at a time
        sim.clock.advance(10)
        await asyncio.sleep(0)
    await receiver.wait_for(
        lambda: all(finished(receiver.calls.get(p, [])) for p in ("/direct", "/meta"))
    )
    final = await read(px, VIDEOS, item["uid"])
    transitions = len(final["task_logs"])
    assert transitions >= 7  # requested, running, four progress steps, completed
    for path in ("/direct", "/meta"):
        calls = receiver.calls[path]
        assert len(calls) >= transitions
        assert all(call["task_type"] == "Video" for call in calls)
        assert all(call["uid"] == item["uid"] for call in calls)
        assert [k for k in calls[-1] if k != "task_type"] == list(final)
        progress = [call["task_progress"] for call in calls]
        assert progress == sorted(progress)
        assert [len(call["task_logs"]) for call in calls] == list(range(1, len(calls) + 1))
        assert calls[-1]["results"] == final["results"]


async def test_failed_deliveries_are_logged_as_webhook_errors(
    sim: Simulator, px: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.plan_next("complete", queue_delay=2, render_time=2)
    nobody = f"{receiver.url}/ok"
    item = await create(
        px,
        SUBTITLES,
        {**SUBTITLE, "webhook_url": nobody, "meta_data": {"webhook_url": "http://127.0.0.1:9/x"}},
    )
    sim.clock.advance(10)
    await receiver.wait_for(lambda: finished(receiver.calls.get("/ok", [])))
    done = await read(px, SUBTITLES, item["uid"])
    errors = [e for e in done["task_logs"] if e["log_type"] == "webhook_error"]
    # Every save but the last was delivered before this read; the last one's error may follow.
    assert len(errors) >= len(receiver.calls["/ok"]) - 1 >= 6
    assert all("http://127.0.0.1:9/x" in e["message"] for e in errors)
    assert receiver.calls["/ok"][-1]["task_type"] == "Subtitle"


async def test_pending_webhook_tasks_stop_with_the_simulator(receiver: Receiver) -> None:
    async with Simulator(MANUAL, api_key="k") as sim:
        sim.plan_next("draft")  # never ends: its delivery task would run forever
        async with aiohttp.ClientSession(headers={"x-api-key": "k"}) as http:
            body = {**VIDEO, "webhook_url": f"{receiver.url}/draft"}
            async with http.post(sim.urls["pixy"] + VIDEOS, json=body) as reply:
                assert reply.status == 201
        sim.clock.advance(1)
        await receiver.wait_for(lambda: bool(receiver.calls.get("/draft")))
    assert receiver.calls["/draft"][0]["task_status"] == "draft"
    assert not [t for t in asyncio.all_tasks() if "_run" in repr(t.get_coro())]


@pytest.mark.parametrize(
    "scenario", [Scenario(seed=3, time_scale=1.0, queue_delay=1, render_time=1)]
)
async def test_images_take_no_webhook(sim: Simulator, px: aiohttp.ClientSession) -> None:
    item = await create(px, IMAGES, {**IMAGE, "webhook_url": "http://127.0.0.1:9/x"})
    assert item["webhook_url"] is None  # the image create schema has no such field
