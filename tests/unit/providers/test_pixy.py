"""Pixy: properties, request shapes, and mapping recorded-shape items onto JobState (no sockets,
except the fake network of aioresponses)."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pollkit.client._pixy import PixyClient
from pollkit.errors import ConfigurationError, InvalidRequest, NotFound, ProtocolError
from pollkit.models import JobState, Status
from pollkit.providers import Request, Response
from pollkit.providers.pixy import (
    ImageGenProperties,
    Pixy,
    SubtitleGenProperties,
    VideoGenProperties,
)
from pollkit.providers.pixy_properties import IMAGE_TO_VIDEO_ENGINES, TEXT_TO_VIDEO_ENGINES
from tests.fakenet import aioresponses
from tests.helpers import FAST_RETRY

KEY = "pk_live_secret_123"
BASE = "http://sim.test/pixy"
IMAGES = f"{BASE}/v1/apps/imagine/imagination/"
VIDEOS = f"{BASE}/v1/apps/videogen/videos/"
UID = "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10"
OTHER = "7e8d9c0b-1a2f-4e3d-8c7b-6a5f4e3d2c1b"
NOW = datetime(2025, 5, 10, 8, 0, 10, tzinfo=timezone.utc)
px = Pixy(api_key=KEY, base_url=BASE)


def image_item(status: str, task_status: str, **overrides: Any) -> dict[str, Any]:
    """An image item in the recorded shape of docs/apis/pixy.md#item-shape."""
    item: dict[str, Any] = {
        "created_at": "2025-05-10T08:00:00.120000", "updated_at": "2025-05-10T08:00:07.480000",
        "is_deleted": False, "meta_data": None, "uid": UID,
        "user_id": "5a1d9e2b-7c3f-4b8a-a6d2-1f0e9c8b7a65", "task_status": task_status,
        "task_report": "photon_flash has been requested.", "task_progress": 50,
        "task_logs": [{"reported_at": "2025-05-10T08:00:07.480000", "message": "photon_flash has"
                       " been requested.", "task_status": "processing", "duration": 7,
                       "log_type": "report"}],
        "task_references": None, "task_start_at": None, "task_end_at": None, "webhook_url": None,
        "engine": "photon_flash", "aspect_ratio": "1:1", "delineation": "a red kite",
        "context": [{}], "enhance_prompt": False, "prompt": "a red kite", "error": None,
        "bulk": None, "status": status, "results": None, "usage_id": None,
    }  # fmt: skip
    return item | overrides


def video_item(task_status: str, **overrides: Any) -> dict[str, Any]:
    """A video item: the shared envelope, no `status` (docs/apis/pixy.md#status-map)."""
    item = image_item("-", task_status, task_order_score=0) | overrides
    for key in ("status", "aspect_ratio", "delineation", "context", "enhance_prompt", "prompt"):
        item.pop(key)
    return item


def reply(payload: Any, url: str = IMAGES + UID, status: int = 200) -> Response:
    request = Request("GET", url, "get image", job_id=UID)
    return Response(
        status, {"Content-Type": "application/json"}, json.dumps(payload).encode(), request
    )


def state_of(
    item: dict[str, Any], previous: JobState | None = None, url: str = IMAGES + UID
) -> JobState:
    return Pixy(api_key=KEY, base_url=BASE).parse_state(reply(item, url), NOW, previous)


def earlier(status: Status, progress: float | None = None) -> JobState:
    return JobState("pixy", UID, status, "x", NOW - timedelta(seconds=10), progress=progress)


# -- construction and secrets -------------------------------------------------------------------


def test_hosts_default_to_pixy_and_follow_a_custom_base_url() -> None:
    real = Pixy(api_key=KEY)
    assert (real.base_url, real.sso_url) == ("https://media.pixy.ir", "https://sso.pixy.ir")
    assert (px.base_url, px.sso_url) == (BASE, BASE)
    both = Pixy(api_key=KEY, base_url=BASE, sso_url="https://sso.test/")
    assert both.startup_request().url == "https://sso.test/api_key/verify"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_key": " "}, "no API key"),
        ({"api_key": KEY, "base_url": "ftp://x"}, "base_url must be an http"),
        ({"api_key": KEY, "sso_url": "sso.pixy.ir"}, "sso_url must be an http"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Pixy(**kwargs)


def test_verify_request_sends_the_key_in_the_body_only_and_never_shows_it() -> None:
    request = px.startup_request()
    assert (request.method, request.url) == ("POST", f"{BASE}/api_key/verify")
    assert json.loads(json.dumps(request.json_body)) == {"api_key": KEY}
    assert "x-api-key" not in request.headers
    assert request.headers["accept"] == "application/json"
    assert KEY not in repr(request)
    assert KEY not in repr(px)
    submit = px.submit_request({"type": "image", "engine": "dalle", "delineation": "x"})
    assert submit.headers["x-api-key"] == KEY
    assert KEY not in repr(submit)


# -- specs --------------------------------------------------------------------------------------


def test_each_type_posts_its_complete_model_to_its_collection() -> None:
    image = px.submit_request({"type": "image", "engine": "dalle", "delineation": "a kite"})
    assert (image.method, image.url) == ("POST", IMAGES)
    assert image.json_body == {
        "engine": "dalle", "aspect_ratio": "1:1", "delineation": "a kite", "context": [{}],
        "enhance_prompt": False,
    }  # fmt: skip
    video = px.submit_request(VideoGenProperties(user_prompt="a boat", engine="luma"))
    assert video.url == VIDEOS
    assert video.json_body == {
        "user_prompt": "a boat", "engine": "luma", "image_url": None, "meta_data": None,
        "webhook_url": None,
    }  # fmt: skip
    subtitle = px.submit_request(SubtitleGenProperties(url="https://m.test/a.mp4").as_spec())
    assert subtitle.url == f"{BASE}/v1/apps/subtitle/subtitles/"
    assert subtitle.json_body == {
        "url": "https://m.test/a.mp4", "source_language": "auto", "target_language": "Persian",
        "diarization": False, "enhanced": True, "meta_data": None, "webhook_url": None,
    }  # fmt: skip
    spec = ImageGenProperties(engine="midjourney", delineation="x", aspect_ratio="7:4").as_spec()
    assert spec["type"] == "image"
    assert px.submit_request(spec).json_body["aspect_ratio"] == "7:4"


@pytest.mark.parametrize("engine", sorted(IMAGE_TO_VIDEO_ENGINES))
def test_image_to_video_engines_require_an_image(engine: str) -> None:
    spec = {"type": "video", "engine": engine, "user_prompt": "x"}
    with pytest.raises(ConfigurationError, match=f"image_url: engine {engine} animates"):
        px.submit_request(spec)
    assert px.submit_request({**spec, "image_url": "https://x.test/a.png"}).url == VIDEOS


@pytest.mark.parametrize("engine", sorted(TEXT_TO_VIDEO_ENGINES))
def test_text_to_video_engines_refuse_an_image(engine: str) -> None:
    spec = {"type": "video", "engine": engine, "user_prompt": "x"}
    with pytest.raises(ConfigurationError, match=f"image_url: engine {engine} works from text"):
        px.submit_request({**spec, "image_url": "https://x.test/a.png"})
    assert px.submit_request(spec).json_body["image_url"] is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"engine": "dalle"}, "'type' must be one of image, video, subtitle"),
        ({"type": "audio"}, "'type' must be one of"),
        ({"type": "image", "engine": "dalle", "delineation": "x", "aspect_ratio": "16:9"},
         "image spec: aspect_ratio: '16:9' is not available with engine dalle"),
        ({"type": "image", "engine": "dall-e", "delineation": "x"}, "image spec: engine:"),
        ({"type": "image", "engine": "dalle"}, "image spec: delineation: Field required"),
        ({"type": "image", "engine": "dalle", "delineation": ""}, "image spec: delineation"),
        ({"type": "image", "engine": "dalle", "delineation": "x", "webhook_url": "http://h.test"},
         "image spec: webhook_url: Extra inputs are not permitted"),
        ({"type": "video", "engine": "luma", "user_prompt": "x", "webhook_url": "nope"},
         "video spec: webhook_url: webhook_url must be an http"),
        ({"type": "subtitle", "url": "https://m.test/a", "target_language": "Klingon"},
         "subtitle spec: target_language"),
        ({"type": "subtitle", "url": "https://m.test/a", "target_language": "auto"},
         "subtitle spec: target_language"),
        ({"type": "subtitle", "url": "file:///etc/passwd"}, "subtitle spec: url"),
    ],
)  # fmt: skip
def test_invalid_specs_name_the_bad_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        px.submit_request(spec)


def test_languages_accept_the_23_names_and_auto_as_source() -> None:
    props = SubtitleGenProperties(url="https://m.test/a", source_language="Mandarin")
    assert props.target_language == "Persian"
    assert SubtitleGenProperties(url="https://m.test/a").source_language == "auto"
    from pollkit.providers.pixy_properties import LANGUAGES

    assert len(LANGUAGES) == 23


def test_ids_must_be_uuids_and_unknown_types_try_each_collection() -> None:
    with pytest.raises(ConfigurationError, match="not a uid"):
        px.status_requests("../etc", "image")
    urls = [r.url for r in px.status_requests(UID.upper(), None)]
    assert urls == [f"{BASE}{c}{UID}" for c in (
        "/v1/apps/imagine/imagination/", "/v1/apps/videogen/videos/",
        "/v1/apps/subtitle/subtitles/",
    )]  # fmt: skip
    (delete,) = px.delete_requests(UID, "video")
    assert (delete.method, delete.url) == ("DELETE", VIDEOS + UID)
    (patch,) = px.update_requests(UID, "image", {"meta_data": {"a": 1}})
    assert (patch.method, patch.json_body) == ("PATCH", {"meta_data": {"a": 1}})
    with pytest.raises(ConfigurationError, match="non-empty mapping"):
        px.update_requests(UID, "image", {})


def test_list_request_always_sends_offset_and_limit_and_dates_only_when_set() -> None:
    plain = px.list_request("image")
    assert (plain.url, plain.params) == (IMAGES, {"offset": "0", "limit": "10"})
    since = datetime(2025, 5, 10, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    dated = px.list_request("video", offset=20, limit=100, created_at_from=since)
    assert dated.params == {
        "offset": "20", "limit": "100", "created_at_from": "2025-05-10T08:30:00.000000",
    }  # fmt: skip


# -- status mapping (docs/apis/pixy.md#status-map) ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "task_status", "expected"),
    [
        ("none", "null", Status.DRAFT),
        ("draft", "draft", Status.DRAFT),
        ("init", "init", Status.QUEUED),
        ("queue", "processing", Status.QUEUED),
        ("waiting", "processing", Status.QUEUED),
        ("running", "processing", Status.RENDERING),
        ("processing", "processing", Status.RENDERING),
        ("done", "completed", Status.COMPLETE),
        ("completed", "completed", Status.COMPLETE),
        ("error", "error", Status.ERROR),
        ("cancelled", "completed", Status.CANCELED),  # cancelled beats completed
        ("completed", "error", Status.ERROR),  # either field reading error wins
        ("processing", "error", Status.ERROR),
    ],
)
def test_status_is_read_first(status: str, task_status: str, expected: Status) -> None:
    state = state_of(image_item(status, task_status))
    assert (state.status, state.native_status, state.kind) == (expected, status, "image")


@pytest.mark.parametrize(
    ("task_status", "expected"),
    [
        ("null", Status.DRAFT),
        ("draft", Status.DRAFT),
        ("init", Status.QUEUED),
        ("processing", Status.RENDERING),
        ("paused", Status.QUEUED),
        ("completed", Status.COMPLETE),
        ("done", Status.COMPLETE),
        ("error", Status.ERROR),
    ],
)
def test_task_status_when_there_is_no_status(task_status: str, expected: Status) -> None:
    state = state_of(video_item(task_status), url=VIDEOS + UID)
    assert (state.status, state.native_status, state.kind) == (expected, task_status, "video")


def test_unknown_statuses_are_not_terminal_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = Pixy(api_key=KEY, base_url=BASE)
    with caplog.at_level(logging.WARNING, logger="pollkit.providers"):
        first = provider.parse_state(reply(image_item("rendering_v2", "completed")), NOW, None)
        again = provider.parse_state(
            reply(image_item("rendering_v2", "processing")), NOW, earlier(Status.RENDERING)
        )
        video = provider.parse_state(reply(video_item("archived"), VIDEOS + UID), NOW, None)
    assert (first.status, first.native_status) == (Status.QUEUED, "rendering_v2")
    assert again.status is Status.RENDERING  # the last known non-terminal status
    assert video.status is Status.QUEUED
    messages = [r.getMessage() for r in caplog.records]
    assert sum("'rendering_v2'" in m for m in messages) == 1
    assert KEY not in caplog.text


def test_deleted_before_finishing_is_canceled_deleted_after_it_stays() -> None:
    state = state_of(image_item("running", "processing", is_deleted=True))
    assert state.status is Status.CANCELED
    assert state.error is not None
    assert state.error.code == "deleted"
    done = state_of(image_item("completed", "completed", is_deleted=True))
    assert done.status is Status.COMPLETE


def test_terminal_states_are_sticky_except_cancelled_over_completed() -> None:
    failed = earlier(Status.ERROR)
    assert state_of(image_item("completed", "completed"), failed).status is Status.ERROR
    complete = earlier(Status.COMPLETE)
    assert state_of(image_item("cancelled", "completed"), complete).status is Status.CANCELED
    assert state_of(image_item("error", "error"), complete).status is Status.COMPLETE


def test_error_reason_comes_from_error_then_report() -> None:
    failed = state_of(image_item("error", "error", error="quota exceeded"))
    assert failed.error is not None
    assert failed.error.message == "quota exceeded"
    reported = state_of(image_item("error", "error", task_report="Imagine failed, boom"))
    assert reported.error is not None
    assert reported.error.message == "Imagine failed, boom"


def test_progress_is_a_fraction_never_falls_and_gives_an_eta() -> None:
    assert state_of(image_item("init", "init", task_progress=-1)).progress is None
    half = state_of(image_item("running", "processing", task_progress=50))
    assert half.progress == 0.5
    assert half.eta_seconds is None
    rising = state_of(
        image_item("running", "processing", task_progress=60), earlier(Status.RENDERING, 0.4)
    )
    assert rising.progress == 0.6
    assert rising.eta_seconds == pytest.approx(20.0)  # 20 points in 10 s, 40 to go
    falling = state_of(
        image_item("running", "processing", task_progress=30), earlier(Status.RENDERING, 0.4)
    )
    assert falling.progress == 0.4


def test_complete_items_list_their_results_as_outputs() -> None:
    results = [
        {"url": f"https://cdn.pixy.test/files/{UID}-{i}.png", "width": 1024, "height": 1024}
        for i in range(4)
    ]
    state = state_of(image_item("completed", "completed", results=results, task_progress=100))
    assert [(o.index, o.name, o.url) for o in state.outputs] == [
        (i, f"{UID}-{i}.png", r["url"]) for i, r in enumerate(results)
    ]
    assert state.raw["results"][0]["width"] == 1024
    assert state.raw["task_logs"][0]["log_type"] == "report"  # logs travel in raw
    assert state.progress == 1.0
    assert px.name_fields(state) == {"engine": "photon_flash", "type": "image"}
    queued = state_of(image_item("init", "init", results=results))
    assert queued.outputs == ()


@pytest.mark.parametrize("payload", [[], {"uid": UID}, {"task_status": "init"}, "text"])
def test_replies_that_are_not_items_are_protocol_errors(payload: Any) -> None:
    with pytest.raises(ProtocolError, match="not a Pixy item"):
        state_of(payload)


# -- batch polling ------------------------------------------------------------------------------


def submitted(provider: Pixy, uid: str, created_at: str, url: str = IMAGES) -> None:
    request = Request("POST", url, "generate image")
    item = image_item("init", "init", uid=uid, created_at=created_at)
    provider.parse_submission(Response(201, {}, json.dumps(item).encode(), request), NOW)


def test_batch_request_pages_the_window_of_the_tracked_jobs_of_the_main_type() -> None:
    provider = Pixy(api_key=KEY, base_url=BASE)
    submitted(provider, UID, "2025-05-10T08:00:00.500000")
    submitted(provider, OTHER, "2025-05-10T08:00:00.120000")
    video = "11111111-2222-4333-8444-555555555555"
    submitted(provider, video, "2025-05-10T08:00:03.000000", VIDEOS)
    request = provider.batch_status_request([UID, video, OTHER])
    assert request.url == IMAGES
    assert request.params == {
        "offset": "0", "limit": "100",
        "created_at_from": "2025-05-10T08:00:00.120000",
        "created_at_to": "2025-05-10T08:00:00.500000",
    }  # fmt: skip
    page = {
        "items": [
            image_item("completed", "completed", uid=UID),
            image_item("running", "processing", uid="99999999-2222-4333-8444-555555555555"),
        ],
        "total": 2, "offset": 0, "limit": 100,
    }  # fmt: skip
    states = provider.parse_batch_states(reply(page, IMAGES), NOW, {})
    assert list(states) == [UID]  # a job this client does not track is left out
    assert states[UID].status is Status.COMPLETE
    # Finished jobs are no longer aimed at.
    assert provider.batch_status_request([UID, OTHER]).params["created_at_to"] == (
        "2025-05-10T08:00:00.120000"
    )


def test_parse_page_reads_counts_and_items() -> None:
    page = px.parse_page(
        reply(
            {"items": [image_item("init", "init")], "total": 256, "offset": 0, "limit": 1}, IMAGES
        ),
        NOW,
    )
    assert (page.kind, page.total, page.offset, page.limit, page.next_offset) == (
        "image",
        256,
        0,
        1,
        1,
    )
    assert page.items[0].job_id == UID
    with pytest.raises(ProtocolError):
        px.parse_page(reply({"detail": "Not Found"}, IMAGES), NOW)


# -- request shapes and error envelopes on a fake network ---------------------------------------


async def test_client_verifies_then_generates_and_maps_error_envelopes() -> None:
    created = image_item("init", "init", task_progress=-1, task_logs=[], results=None)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/api_key/verify", status=200, payload={})
        mocked.post(IMAGES, status=201, payload=created)
        mocked.get(
            IMAGES + OTHER,
            status=404,
            payload={"message": "Imagination not found", "error": "item_not_found"},
        )
        detail = [
            {
                "type": "less_than_equal",
                "loc": ["query", "limit"],
                "msg": "Input should be less than or equal to 100",
            }
        ]
        mocked.get(re.compile(re.escape(IMAGES) + r"\?.*"), status=422, payload={"detail": detail})
        async with PixyClient(Pixy(api_key=KEY, base_url=BASE), retry=FAST_RETRY) as client:
            submission = await client.submit(
                {"type": "image", "engine": "dalle", "delineation": "x"}
            )
            with pytest.raises(NotFound, match="Imagination not found") as missing:
                await client.get(OTHER, kind="image")
            with pytest.raises(InvalidRequest) as invalid:
                await client.list_page("image", limit=101)
        calls = list(mocked.requests.items())
    assert (submission.job_id, submission.kind) == (UID, "image")
    assert missing.value.status_code == 404
    assert invalid.value.details == detail
    (verify_key, verify_calls), (post_key, post_calls) = calls[0], calls[1]
    assert (verify_key[0], str(verify_key[1])) == ("POST", f"{BASE}/api_key/verify")
    assert verify_calls[0].kwargs["json"] == {"api_key": KEY}
    assert "x-api-key" not in verify_calls[0].kwargs["headers"]
    assert (post_key[0], str(post_key[1])) == ("POST", IMAGES)
    assert post_calls[0].kwargs["headers"]["x-api-key"] == KEY
    assert post_calls[0].kwargs["json"]["context"] == [{}]
    assert KEY not in str(missing.value)


def test_a_copy_for_another_server_shares_none_of_what_was_learned() -> None:
    provider = Pixy(api_key=KEY, base_url=BASE)
    submitted(provider, UID, "2025-05-10T08:00:00.500000")
    elsewhere = provider.with_base_url("https://eu.pixy.test")
    # The copy knows no job of the first server: its list request is the plain first page,
    # and a job it learns of is not seen by the original.
    assert elsewhere.batch_status_request([UID]).params == {"offset": "0", "limit": "100"}
    submitted(elsewhere, OTHER, "2025-05-10T09:00:00", "https://eu.pixy.test/api/v1/images/")
    window = provider.batch_status_request([UID, OTHER]).params
    assert window is not None
    assert (window["created_at_from"], window["created_at_to"]) == (
        "2025-05-10T08:00:00.500000",
        "2025-05-10T08:00:00.500000",
    )
