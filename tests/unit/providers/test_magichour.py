"""Magic Hour: spec validation, request shapes, and mapping replies onto JobState."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest

from pollkit.errors import ConfigurationError, ProtocolError, UnsupportedOperation
from pollkit.models import Status
from pollkit.providers import MagicHour, Request, Response

KEY = "mhk_live_secret_123"
NOW = datetime(2025, 6, 3, 10, 15, tzinfo=timezone.utc)
mh = MagicHour(api_key=KEY, base_url="http://sim.test/")


def reply(payload: Any, url: str, status: int = 200, job_id: str | None = "p1") -> Response:
    request = Request("GET", url, "get project", job_id=job_id)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Response(status, {"Content-Type": "application/json"}, body, request)


def image_project(status: str, **overrides: Any) -> dict[str, Any]:
    project = {
        "id": "p1",
        "name": "harbour",
        "status": status,
        "type": "AI_IMAGE",
        "image_count": 2,
        "created_at": "2025-06-03T10:15:00.000Z",
        "enabled": True,
        "credits_charged": 10,
        "total_frame_cost": 10,
        "downloads": [],
        "error": None,
    }
    return project | overrides


IMAGE_URL = "http://sim.test/v1/image-projects/p1"
VIDEO_URL = "http://sim.test/v1/video-projects/p1"


def test_submit_request_posts_the_spec_without_tool_with_bearer_auth() -> None:
    spec = {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "x"}}
    request = mh.submit_request(spec)
    assert (request.method, request.url) == ("POST", "http://sim.test/v1/ai-image-generator")
    assert request.json_body == {"image_count": 2, "style": {"prompt": "x"}}
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(request)
    assert KEY not in repr(mh)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"image_count": 1}, "'tool' must name"),
        ({"tool": "face-detection"}, "does not create a project"),
        ({"tool": "ai-image-generator", "image_count": 0, "style": {"prompt": "x"}}, "image_count"),
        (
            {"tool": "ai-image-generator", "image_count": 17, "style": {"prompt": "x"}},
            "image_count",
        ),
        ({"tool": "ai-image-generator", "image_count": 1, "style": {}}, "style.prompt"),
        ({"tool": "ai-image-generator", "image_count": 1}, "style"),
        ({"tool": "text-to-video", "end_seconds": 61, "style": {"prompt": "x"}}, "end_seconds"),
        (
            {
                "tool": "animation",
                "fps": 12,
                "end_seconds": 3,
                "width": 512,
                "height": 512,
                "style": {
                    "art_style": "Custom",
                    "camera_effect": "Bounce Out",
                    "prompt_type": "ai_choose",
                    "transition_speed": 5,
                },
                "assets": {"audio_source": "none"},
            },
            "art_style_custom",
        ),
        (
            {
                "tool": "animation",
                "fps": 12,
                "end_seconds": 3,
                "width": 32,
                "height": 512,
                "style": {
                    "art_style": "Cyberpunk",
                    "camera_effect": "Bounce Out",
                    "prompt_type": "ai_choose",
                    "transition_speed": 5,
                },
                "assets": {"audio_source": "none"},
            },
            "width",
        ),
    ],
)
def test_invalid_specs_are_refused_before_sending(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        mh.submit_request(spec)


def test_other_tools_pass_through_and_route_by_kind() -> None:
    assert mh.submit_request({"tool": "face-swap", "x": 1}).url.endswith("/v1/face-swap")
    assert MagicHour.kind_of_tool("face-swap-photo") == "image"
    assert MagicHour.kind_of_tool("lip-sync") == "video"
    assert MagicHour.kind_of_tool("ai-voice-generator") == "audio"


def test_status_requests_try_each_kind_when_unknown() -> None:
    urls = [r.url for r in mh.status_requests("p1", None)]
    assert urls == [IMAGE_URL, VIDEO_URL, "http://sim.test/v1/audio-projects/p1"]
    assert [r.url for r in mh.status_requests("p1", "video")] == [VIDEO_URL]


@pytest.mark.parametrize("bad", ["", "a/b", " p1", "../x"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid project id"):
        mh.status_requests(bad, None)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ConfigurationError, match="no API key"):
        MagicHour(api_key="  ")
    with pytest.raises(ConfigurationError, match="MAGIC_HOUR_API_KEY"):
        MagicHour()
    with pytest.raises(ConfigurationError, match="base_url"):
        MagicHour(api_key="k", base_url="ftp://x")


def test_key_and_url_come_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAGIC_HOUR_API_KEY", "mhk_from_env")
    monkeypatch.setenv("MAGIC_HOUR_BASE_URL", "http://127.0.0.1:9/")
    provider = MagicHour()
    assert provider.secrets == ("mhk_from_env",)
    assert provider.base_url == "http://127.0.0.1:9"
    request = provider.status_requests("p1", "image")[0]
    assert request.url == "http://127.0.0.1:9/v1/image-projects/p1"
    assert request.headers["Authorization"] == "Bearer mhk_from_env"
    # What is passed wins over the environment.
    assert MagicHour(api_key="k", base_url="http://h").base_url == "http://h"


def test_cancel_is_not_supported() -> None:
    with pytest.raises(UnsupportedOperation, match="no cancel endpoint"):
        mh.cancel_request("p1", "image")


@pytest.mark.parametrize(
    ("native", "status"),
    [
        ("draft", Status.DRAFT),
        ("queued", Status.QUEUED),
        ("rendering", Status.RENDERING),
        ("canceled", Status.CANCELED),
    ],
)
def test_native_statuses_map_one_to_one(native: str, status: Status) -> None:
    state = mh.parse_state(reply(image_project(native), IMAGE_URL), NOW, None)
    assert (state.status, state.native_status, state.kind) == (status, native, "image")
    assert state.outputs == ()


def test_complete_image_project_lists_its_downloads() -> None:
    downloads = [
        {"url": "http://cdn.test/p1/output-0.png?sig=s1", "expires_at": "2025-06-04T10:15:00.000Z"},
        {"url": "http://cdn.test/p1/output-1.png?sig=s1", "expires_at": "2025-06-04T10:15:00.000Z"},
    ]
    payload = image_project("complete", downloads=downloads)
    state = mh.parse_state(reply(payload, IMAGE_URL), NOW, None)
    assert state.status is Status.COMPLETE
    assert state.is_terminal
    assert [(o.index, o.name) for o in state.outputs] == [(0, "output-0.png"), (1, "output-1.png")]
    assert state.outputs[0].expires_at == datetime(2025, 6, 4, 10, 15, tzinfo=timezone.utc)
    assert state.raw == payload


def test_video_falls_back_to_the_deprecated_download_field() -> None:
    entry = {"url": "http://cdn.test/p1/output.mp4", "expires_at": "2025-06-04T10:15:00.000Z"}
    payload = image_project("complete", type="TEXT_TO_VIDEO", downloads=[], download=entry)
    state = mh.parse_state(reply(payload, VIDEO_URL), NOW, None)
    assert state.kind == "video"
    assert [o.name for o in state.outputs] == ["output.mp4"]


def test_error_carries_the_api_reason() -> None:
    error = {"code": "render_failed", "message": "The render could not be completed"}
    state = mh.parse_state(reply(image_project("error", error=error), IMAGE_URL), NOW, None)
    assert state.status is Status.ERROR
    assert state.error is not None
    assert (state.error.code, state.error.message) == ("render_failed", error["message"])


def test_unknown_status_keeps_waiting_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    provider = MagicHour(api_key=KEY, base_url="http://sim.test")
    rendering = provider.parse_state(reply(image_project("rendering"), IMAGE_URL), NOW, None)
    with caplog.at_level(logging.WARNING, logger="pollkit.providers"):
        first = provider.parse_state(reply(image_project("upscaling"), IMAGE_URL), NOW, rendering)
        again = provider.parse_state(reply(image_project("upscaling"), IMAGE_URL), NOW, first)
        fresh = provider.parse_state(reply(image_project("upscaling"), IMAGE_URL), NOW, None)
    assert (first.status, again.status, fresh.status) == (
        Status.RENDERING,
        Status.RENDERING,
        Status.QUEUED,
    )
    assert first.native_status == "upscaling"
    assert [r.getMessage() for r in caplog.records].count(
        "magichour job p1: unknown status 'upscaling', treated as not finished"
    ) == 1


def test_deleted_before_finishing_is_an_error() -> None:
    payload = image_project("rendering", enabled=False)
    state = mh.parse_state(reply(payload, IMAGE_URL), NOW, None)
    assert state.status is Status.ERROR
    assert state.error is not None
    assert state.error.code == "deleted"


def test_deleted_after_completing_stays_complete() -> None:
    downloads = [{"url": "http://cdn.test/a.png", "expires_at": None}]
    payload = image_project("complete", enabled=False, downloads=downloads)
    assert mh.parse_state(reply(payload, IMAGE_URL), NOW, None).status is Status.COMPLETE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "not JSON"),
        ({"status": "complete"}, "does not fit"),
        ({"id": "p1", "status": 3}, "does not fit"),
        ([1, 2], "does not fit"),
        ({"id": "p1", "status": "complete", "downloads": [{"href": "x"}]}, "does not fit"),
    ],
)
def test_malformed_replies_are_protocol_errors(body: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        mh.parse_state(reply(body, IMAGE_URL), NOW, None)
    assert "job p1" in str(info.value)


def test_submission_reads_the_id_and_kind_from_the_tool() -> None:
    request = mh.submit_request(
        {"tool": "text-to-video", "end_seconds": 5, "style": {"prompt": "x"}}
    )
    body = json.dumps({"id": "v9", "credits_charged": 450, "estimated_frame_cost": 450}).encode()
    submission = mh.parse_submission(Response(200, {}, body, request), NOW)
    assert (submission.job_id, submission.kind) == ("v9", "video")
    with pytest.raises(ProtocolError, match="no project id"):
        mh.parse_submission(Response(200, {}, b'{"credits_charged": 1}', request), NOW)
