"""The Magic Hour dialect: v1 image and video projects, as described in docs/apis/magichour.md.

Faithful where clients can tell: 200 on create, 204 on delete, every documented key in every
reply (deprecated ones too), ``canceled`` with one l, ``{"message": ...}`` error bodies, and the
API key checked before the project id (401 beats 404). Enum-like fields (models, styles,
resolutions) accept any string, because the real lists grow with every release.

A project deleted before it finishes stops rendering and reads as ``canceled`` (the real
behaviour is undocumented; this way nothing polls a deleted project forever).
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pollkit.sim._clock import iso_millis
from pollkit.sim._state import STATE, Job, SimState

__all__ = ["DIALECT", "add_routes"]

DIALECT = "magichour"

_IMAGE_ROUTE = "/v1/image-projects/{id}"
_VIDEO_ROUTE = "/v1/video-projects/{id}"
_RENDER_ERROR = {"code": "render_failed", "message": "The render could not be completed"}
_RESOLUTIONS = {"360p": 360, "480p": 480, "720p": 720, "1080p": 1080, "4k": 2160}
# A status the API might add one day (Scenario.unknown_status_rate shows it mid-render).
_UNKNOWN_STATUS = "paused"


def _message(status: int, text: str) -> web.Response:
    return web.json_response({"message": text}, status=status)


class _BadRequest(Exception):
    """A request body that the real API would reject with 400."""


# -- request validation -------------------------------------------------------------------


def _lookup(body: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(body: dict[str, Any], path: str, low: float, high: float | None = None) -> float:
    present, value = _lookup(body, path)
    if not present or value is None:
        raise _BadRequest(f"{path} is required")
    within = _is_number(value) and value >= low and (high is None or value <= high)
    if not within:
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise _BadRequest(f"{path} must be a number {bounds}")
    return float(value)


def _integer(body: dict[str, Any], path: str, low: int, high: int | None = None) -> int:
    present, value = _lookup(body, path)
    if not present or value is None:
        raise _BadRequest(f"{path} is required")
    integral = _is_number(value) and float(value).is_integer()
    if not integral or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _BadRequest(f"{path} must be an integer {bounds}")
    return int(value)


def _string(body: dict[str, Any], path: str, *, required: bool = True) -> str | None:
    present, value = _lookup(body, path)
    if not present or value is None:
        if required:
            raise _BadRequest(f"{path} is required")
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"{path} must be a string")
    return value


def _optional_bool(body: dict[str, Any], path: str) -> bool | None:
    present, value = _lookup(body, path)
    if not present or value is None:
        return None
    if not isinstance(value, bool):
        raise _BadRequest(f"{path} must be a boolean")
    return value


def _object(body: dict[str, Any], path: str) -> None:
    present, value = _lookup(body, path)
    if not present or value is None:
        raise _BadRequest(f"{path} is required")
    if not isinstance(value, dict):
        raise _BadRequest(f"{path} must be an object")


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _BadRequest("Missing request body")
    return body


def _video_dimensions(body: dict[str, Any]) -> tuple[int, int]:
    aspect = _string(body, "aspect_ratio", required=False)
    orientation = _string(body, "orientation", required=False)
    resolution = _string(body, "resolution", required=False)
    short = _RESOLUTIONS.get(resolution or "", 720)
    long = round(short * 16 / 9 / 2) * 2  # even, as encoders want
    if aspect == "1:1" or (aspect is None and orientation == "square"):
        return short, short
    if aspect == "9:16" or (aspect is None and orientation == "portrait"):
        return short, long
    return long, short


# -- replies ------------------------------------------------------------------------------


def _project(request: web.Request, state: SimState, job: Job) -> dict[str, Any]:
    return project_body(f"{request.scheme}://{request.host}", state, job)


def project_body(origin: str, state: SimState, job: Job) -> dict[str, Any]:
    """The project as a GET shows it now, download URLs signed for `origin`."""
    now = state.clock.now()
    status = job.status(now)
    downloads: list[dict[str, str]] = []
    if status == "complete" and not job.deleted:
        for output in job.outputs:
            url, expires = state.signed_url(origin, job, output)
            downloads.append({"url": url, "expires_at": iso_millis(expires)})
    credits = 0 if status == "error" else int(job.details["credits"])  # refunded on error
    shown = status
    if status == "rendering" and state.shows_unknown_status(job, now):
        shown = _UNKNOWN_STATUS
    project: dict[str, Any] = {
        "id": job.id,
        "name": job.details.get("name"),
        "status": shown,
        "type": job.type,
    }
    if job.kind == "image":
        project["image_count"] = len(job.outputs)
    project.update(
        {
            "created_at": iso_millis(state.clock.wall(job.created_at)),
            "enabled": not job.deleted,
            "credits_charged": credits,
            "total_frame_cost": credits,
        }
    )
    if job.kind == "video":
        project.update(
            {
                "start_seconds": 0.0,
                "end_seconds": job.details["end_seconds"],
                "fps": job.details["fps"],
                "width": job.details["width"],
                "height": job.details["height"],
            }
        )
    project["downloads"] = downloads
    if job.kind == "video":
        project["download"] = downloads[0] if downloads else None
    project["error"] = dict(_RENDER_ERROR) if status == "error" else None
    return project


def _authorized(request: web.Request, state: SimState) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), state.api_key.encode())


# -- handlers -----------------------------------------------------------------------------


def _image_job(state: SimState, body: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    count = _integer(body, "image_count", 1, 16)
    _object(body, "style")
    _string(body, "style.prompt")
    for optional in (
        "style.tool",
        "style.quality_mode",
        "aspect_ratio",
        "orientation",
        "resolution",
        "model",
    ):
        _string(body, optional, required=False)
    name = _string(body, "name", required=False)
    if name is None:
        name = f"Ai Image - {iso_millis(state.clock.wall(state.clock.now()))}"
    credits = 5 * count
    job = state.create_job(
        dialect=DIALECT,
        kind="image",
        type_="AI_IMAGE",
        outputs=[("png", "image/png")] * count,
        details={"name": name, "credits": credits},
    )
    return job, {"id": job.id, "credits_charged": credits, "frame_cost": credits}


def _text_to_video_job(state: SimState, body: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    end_seconds = _number(body, "end_seconds", 1, 60)
    _object(body, "style")
    _string(body, "style.prompt")
    _string(body, "style.quality_mode", required=False)
    _string(body, "model", required=False)
    _optional_bool(body, "audio")
    width, height = _video_dimensions(body)
    credits = round(end_seconds * 90)
    details = {
        "name": _string(body, "name", required=False),
        "credits": credits,
        "end_seconds": end_seconds,
        "fps": 24.0,
        "width": width,
        "height": height,
    }
    job = state.create_job(
        dialect=DIALECT,
        kind="video",
        type_="TEXT_TO_VIDEO",
        outputs=[("mp4", "video/mp4")],
        details=details,
    )
    return job, {"id": job.id, "credits_charged": credits, "estimated_frame_cost": credits}


def _animation_job(state: SimState, body: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    fps = _number(body, "fps", 1)
    end_seconds = _number(body, "end_seconds", 0.1)
    width = _integer(body, "width", 64)
    height = _integer(body, "height", 64)
    _object(body, "style")
    if _string(body, "style.art_style") == "Custom":
        _string(body, "style.art_style_custom")
    _string(body, "style.camera_effect")
    if _string(body, "style.prompt_type") == "custom":
        _string(body, "style.prompt")
    _integer(body, "style.transition_speed", 1, 10)
    _object(body, "assets")
    source = _string(body, "assets.audio_source")
    if source == "file":
        _string(body, "assets.audio_file_path")
    elif source == "youtube":
        _string(body, "assets.youtube_url")
    credits = math.ceil(fps * end_seconds)
    details = {
        "name": _string(body, "name", required=False),
        "credits": credits,
        "end_seconds": end_seconds,
        "fps": fps,
        "width": width,
        "height": height,
    }
    job = state.create_job(
        dialect=DIALECT,
        kind="video",
        type_="ANIMATION",
        outputs=[("mp4", "video/mp4")],
        details=details,
    )
    return job, {"id": job.id, "credits_charged": credits, "estimated_frame_cost": credits}


_CREATORS = {
    "/v1/ai-image-generator": _image_job,
    "/v1/text-to-video": _text_to_video_job,
    "/v1/animation": _animation_job,
}


async def _create(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(request, state):
        return _message(401, "Unauthorized")
    try:
        body = await _read_body(request)
        _job, reply = _CREATORS[request.path](state, body)
    except _BadRequest as exc:
        return _message(400, str(exc))
    return web.json_response(reply)


def _find(request: web.Request, state: SimState, kind: str) -> Job | None:
    job = state.jobs.get(request.match_info["id"])
    if job is None or job.dialect != DIALECT or job.kind != kind:
        return None
    return job


def _project_handler(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        if not _authorized(request, state):
            return _message(401, "Unauthorized")
        job = _find(request, state, kind)
        if job is None:
            return _message(404, "Not Found")
        if request.method == "DELETE":
            if job.deleted and state.scenario.deleted_read == "not_found":
                return _message(404, "Not Found")
            state.delete(job)
            return web.Response(status=204)
        with state.lock:
            job.status_requests += 1
        if job.deleted and state.scenario.deleted_read == "not_found":
            return _message(404, "Not Found")
        return web.json_response(_project(request, state, job))

    return handle


def add_routes(app: web.Application) -> None:
    """Register the Magic Hour routes on `app` (whose `STATE` must be set)."""
    for path in _CREATORS:
        app.router.add_post(path, _create)
    for kind, path in (("image", _IMAGE_ROUTE), ("video", _VIDEO_ROUTE)):
        handler = _project_handler(kind)
        app.router.add_get(path, handler, allow_head=False)
        app.router.add_delete(path, handler)
