"""Pixy items for the simulator: request validation, each job's timeline of saves, and the JSON
of an item at any point of that timeline (docs/apis/pixy.md#the-two-status-fields).

A job's native state is never stored. `timeline` derives the list of *saves* the real server
would make (each status change or report) from the job's drawn durations and outcome, and
`render` shows the item after the first ``n`` of them. The generic `Job.status` of
`pollkit.sim._state` and this timeline agree at every instant: ``init``/``queue`` while the job
is queued, ``running``/``processing`` while it renders, then the outcome.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pollkit.sim._state import Job, OutputSpec, SimState
from pollkit.sim.transfer._files import make_png

__all__ = [
    "KINDS",
    "Save",
    "body_model",
    "naive_iso",
    "outputs_for",
    "render",
    "timeline",
    "validation_detail",
]

#: Collection path (under the dialect prefix) → job kind.
KINDS: dict[str, str] = {
    "/v1/apps/imagine/imagination/": "image",
    "/v1/apps/videogen/videos/": "video",
    "/v1/apps/subtitle/subtitles/": "subtitle",
}
#: Kind → the model class name the server puts in webhooks' ``task_type``.
TASK_TYPES = {"image": "Imagination", "video": "Video", "subtitle": "Subtitle"}
#: Kind → the word starting a failed job's report ("Imagine failed, …").
_SERVICES = {"image": "Imagine", "video": "Videogen", "subtitle": "Subtitle"}

# The image service's `status` → the base library's `task_status` (docs/apis/pixy.md).
TASK_STATUS = {
    "none": "null",
    "draft": "draft",
    "init": "init",
    "queue": "processing",
    "waiting": "processing",
    "running": "processing",
    "processing": "processing",
    "done": "completed",
    "completed": "completed",
    "error": "error",
    "cancelled": "completed",
}

# The server's own tables. The provider (pollkit.providers.pixy_properties) keeps the same facts
# apart on purpose: the simulator stands for the server, and a mistake in the client's tables
# must show up as a 422 here, not be shared by both sides.
_WIDE = ["4:5", "9:16", "3:2", "1:1", "21:9", "16:9", "9:21", "4:3", "3:4", "2:3", "5:4"]
_IDEOGRAM = ["9:16", "3:2", "16:10", "1:1", "16:9", "3:1", "10:16", "4:3", "3:4", "2:3", "1:3"]
_LUMA = ["9:16", "1:1", "21:9", "9:21", "16:9", "4:3", "3:4"]
ASPECT_RATIOS: dict[str, frozenset[str]] = {
    "flux_schnell": frozenset(_WIDE),
    "flux_1.1": frozenset(_WIDE),
    "flux_pro": frozenset(_WIDE) - {"21:9", "9:21"},
    "imagen": frozenset({"9:16", "1:1", "16:9", "4:3", "3:4"}),
    "photon_flash": frozenset(_LUMA),
    "photon": frozenset(_LUMA),
    "dalle": frozenset({"1:1", "4:7", "7:4"}),
    "ideogram_turbo": frozenset(_IDEOGRAM),
    "ideogram": frozenset(_IDEOGRAM),
    "midjourney": frozenset(_WIDE) | frozenset(_IDEOGRAM) | {"7:4", "4:7"},
    "stability": frozenset(_WIDE),
}
IMAGE_TO_VIDEO = frozenset({"hailou", "kling", "hunyuanimageto", "runway", "minimax"})
TEXT_TO_VIDEO = frozenset(
    {"hailoutext", "klingtext", "klingprotext", "klingpro", "hunyuan", "luma"}
)
LANGUAGES = frozenset(
    [
        "English",
        "Persian",
        "Arabic",
        "Turkish",
        "French",
        "Spanish",
        "German",
        "Italian",
        "Portuguese",
        "Dutch",
        "Russian",
        "Polish",
        "Romanian",
        "Bulgarian",
        "Hungarian",
        "Czech",
        "Greek",
        "Hebrew",
        "Japanese",
        "Korean",
        "Mandarin",
        "Vietnamese",
        "Indonesian",
    ]
)

# -- request bodies (validated as the server's FastAPI models would: extra keys ignored) ------


class _ImageBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    engine: str
    aspect_ratio: str = "1:1"
    delineation: str
    context: list[dict[str, Any]] | None = None
    enhance_prompt: bool = False

    @model_validator(mode="after")
    def _engine_and_ratio(self) -> _ImageBody:
        allowed = ASPECT_RATIOS.get(self.engine)
        if allowed is None:
            raise ValueError(f"engine must be one of {', '.join(sorted(ASPECT_RATIOS))}")
        if self.aspect_ratio not in allowed:
            raise ValueError(f"aspect_ratio {self.aspect_ratio} is not supported by {self.engine}")
        return self


class _VideoBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user_prompt: str
    engine: str
    image_url: str | None = None
    meta_data: dict[str, Any] | None = None
    webhook_url: str | None = None

    @model_validator(mode="after")
    def _engine_and_image(self) -> _VideoBody:
        if self.engine not in IMAGE_TO_VIDEO | TEXT_TO_VIDEO:
            raise ValueError("unknown video engine")
        if self.engine in IMAGE_TO_VIDEO and not self.image_url:
            raise ValueError(f"image_url is required by {self.engine}")
        if self.engine in TEXT_TO_VIDEO and self.image_url:
            raise ValueError(f"{self.engine} does not take an image_url")
        return self


class _SubtitleBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    source_language: str | None = "auto"
    target_language: str = "Persian"
    diarization: bool = False
    enhanced: bool = True
    meta_data: dict[str, Any] | None = None
    webhook_url: str | None = None

    @model_validator(mode="after")
    def _languages(self) -> _SubtitleBody:
        if self.source_language not in LANGUAGES | {"auto", None}:
            raise ValueError("source_language is not a supported language")
        if self.target_language not in LANGUAGES:
            raise ValueError("target_language is not a supported language")
        return self


class _Update(BaseModel):
    """What a PATCH may change; fields the simulator derives from its clock are ignored."""

    model_config = ConfigDict(extra="ignore")
    meta_data: dict[str, Any] | None = None
    webhook_url: str | None = None
    delineation: str | None = Field(default=None, min_length=1)
    user_prompt: str | None = Field(default=None, min_length=1)
    context: list[dict[str, Any]] | None = None
    enhance_prompt: bool | None = None
    diarization: bool | None = None
    enhanced: bool | None = None


_BODIES: dict[str, type[BaseModel]] = {
    "image": _ImageBody,
    "video": _VideoBody,
    "subtitle": _SubtitleBody,
    "update": _Update,
}


def body_model(kind: str) -> type[BaseModel]:
    """The model a create body of `kind` (or ``"update"``, a PATCH body) is validated with."""
    return _BODIES[kind]


def validation_detail(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` list for a pydantic error (`where`: ``body`` or ``query``)."""
    detail = []
    for error in exc.errors():
        entry: dict[str, Any] = {
            "type": error["type"],
            "loc": [where, *error["loc"]],
            "msg": error["msg"],
            "input": error.get("input"),
        }
        if "ctx" in error:
            entry["ctx"] = {
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in error["ctx"].items()
            }
        detail.append(entry)
    return detail


# -- outputs ---------------------------------------------------------------------------------


def image_size(aspect_ratio: str, base: tuple[int, int]) -> tuple[int, int]:
    """Pixel size of an image of `aspect_ratio` whose long side is the scenario's long side."""
    across, down = (int(part) for part in aspect_ratio.split(":"))
    long = max(base)
    if across >= down:
        return long, max(1, round(long * down / across))
    return max(1, round(long * across / down)), long


def _srt(language: str, key: bytes) -> bytes:
    lines = []
    for number in range(1, 4):
        start, end = (number - 1) * 2, number * 2
        lines.append(
            f"{number}\n00:00:{start:02d},000 --> 00:00:{end:02d},000\n"
            f"[{language}] line {number} ({key.hex()[:8]})\n"
        )
    return "\n".join(lines).encode()


def outputs_for(kind: str, fields: dict[str, Any], state: SimState) -> list[OutputSpec]:
    """The outputs a new job of `kind` will have: PNGs, an MP4 or an SRT file."""
    if kind == "image":
        width, height = image_size(fields["aspect_ratio"], state.scenario.image_size)
        count = 4 if fields["engine"] == "midjourney" else 1
        make = functools.partial(make_png, width, height)
        return [OutputSpec("png", "image/png", make=make)] * count
    if kind == "video":
        return [OutputSpec("mp4", "video/mp4")]
    make = functools.partial(_srt, fields["target_language"])
    return [OutputSpec("srt", "application/x-subrip", make=make)]


# -- the timeline ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Save:
    """One save of the item by the server: a status change or a report.

    Attributes:
        at: Simulated time of the save.
        status: The image service's status vocabulary (`TASK_STATUS` gives the task status).
        progress: ``task_progress`` after it.
        report: The new ``task_report``, or None to keep the previous one.
        message: The log entry's message.
        log_type: The log entry's type.
    """

    at: float
    status: str
    progress: int
    report: str | None
    message: str
    log_type: Literal["status_update", "report", "error"]

    @property
    def final(self) -> bool:
        """Whether nothing follows this save."""
        return self.status in ("completed", "error", "cancelled")


def engine_of(job: Job) -> str:
    """The engine named in reports (subtitle jobs name none: ``subtitle``)."""
    return str(job.details["fields"].get("engine") or job.kind)


def failure_message(job: Job) -> str:
    """The ``error`` of a job that failed."""
    return f"{engine_of(job)} returned an error after 5 retries"


def timeline(job: Job) -> list[Save]:
    """Every save the server makes for `job`, in order (a draft job's list never ends)."""
    engine = engine_of(job)
    start = job.created_at + job.queue_delay
    end = start + job.render_time
    saves: list[Save] = []
    outcome = job.outcome
    if job.canceled_at is not None:  # cancelled or deleted: what was planned before that
        outcome = job.details.get("planned", outcome)
    if outcome == "draft":
        saves.append(Save(job.created_at, "draft", -1, None, "draft", "status_update"))
    else:
        requested = f"{engine} has been requested."
        saves.append(
            Save(job.created_at + job.queue_delay / 2, "queue", -1, requested, requested, "report")
        )
        saves.append(Save(start, "running", 0, None, "running", "status_update"))
        for step in range(1, 5):
            status = "running" if step < 3 else "processing"
            progress = 20 * step
            at = start + job.render_time * step / 5
            saves.append(Save(at, status, progress, None, f"progress {progress}%", "status_update"))
        last = 80
        if outcome == "complete":
            saves.append(
                Save(
                    end, "completed", 100, f"{engine} completed.", f"{engine} completed.", "report"
                )
            )
        elif outcome == "error":
            report = f"{_SERVICES[job.kind]} failed, {failure_message(job)}"
            saves.append(Save(end, "error", last, report, report, "error"))
        else:  # a planned cancellation, at the moment the render would have ended
            saves.append(
                Save(end, "cancelled", last, "Task cancelled.", "cancelled", "status_update")
            )
    if job.canceled_at is not None:
        saves = [s for s in saves if s.at < job.canceled_at]
        progress = saves[-1].progress if saves else -1
        saves.append(
            Save(
                job.canceled_at,
                "cancelled",
                progress,
                "Task cancelled.",
                "cancelled",
                "status_update",
            )
        )
    return saves


def task_status(kind: str, status: str) -> str:
    """The ``task_status`` that goes with `status` on an item of `kind`.

    Video and subtitle items have no ``status`` (docs/apis/pixy.md) and the base library has no
    cancelled task status: a cancelled one reads ``error`` (with ``error: "cancelled"``), since
    ``completed`` would pass it off as a success.
    """
    if status == "cancelled" and kind != "image":
        return "error"
    return TASK_STATUS[status]


def applied(saves: list[Save], now: float) -> int:
    """How many of `saves` have happened at simulated time `now`."""
    count = 0
    for save in saves:
        if save.at > now:
            break
        count += 1
    return count


# -- the item --------------------------------------------------------------------------------


def naive_iso(epoch_seconds: float) -> str:
    """A Unix time as the server writes it: ISO-8601, no zone, microseconds."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def user_id(api_key: str) -> str:
    """The (made-up) id of the user who owns the key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pollkit-sim:pixy:{api_key}"))


def render(
    state: SimState, job: Job, count: int | None, *, deleted: bool | None = None
) -> dict[str, Any]:
    """The item after the first `count` saves of its timeline (None: as of now).

    Args:
        state: The simulator's state (clock, signing key, scenario).
        job: The job.
        count: How many saves have happened; 0 gives the reply to the create request.
        deleted: Overrides ``is_deleted`` (the reply to a DELETE shows it already set).
    """
    saves = timeline(job)
    clock = state.clock
    if count is None:
        count = applied(saves, clock.now())
    done = saves[:count]
    fields: dict[str, Any] = job.details["fields"]
    status = done[-1].status if done else "init"
    progress = done[-1].progress if done else -1
    report = next((s.report for s in reversed(done) if s.report is not None), None)
    extra: dict[int, list[dict[str, Any]]] = job.details["extra_logs"]
    logs: list[dict[str, Any]] = []
    for index, save in enumerate(done):
        logs.append(
            {
                "reported_at": naive_iso(clock.wall(save.at)),
                "message": save.message,
                "task_status": task_status(job.kind, save.status),
                "duration": int(save.at - job.created_at),
                "log_type": save.log_type,
            }
        )
        logs.extend(extra.get(index, ()))
    changed = max([job.created_at, *(s.at for s in done), job.details.get("patched_at") or 0.0])
    meta = fields.get("meta_data")
    if status == "error":
        meta = {**(meta or {}), "retry_count": 5}
    item: dict[str, Any] = {
        "created_at": job.details["created_iso"],
        "updated_at": naive_iso(clock.wall(changed)),
        "is_deleted": job.deleted if deleted is None else deleted,
        "meta_data": meta,
        "uid": job.id,
        "user_id": user_id(state.api_key),
        "task_status": task_status(job.kind, status),
        "task_report": report,
        "task_progress": progress,
        "task_logs": logs,
        "task_references": None,
        "task_start_at": None,
        "task_end_at": None,
    }
    if job.kind != "image":
        item["task_order_score"] = 0  # newer base library (the image snapshot is older)
    item["webhook_url"] = fields.get("webhook_url")
    results: list[dict[str, Any]] | None = None
    if status == "completed":
        results = []
        for output in job.outputs:
            url, _ = state.signed_url(job.details["origin"], job, output)
            entry: dict[str, Any] = {"url": url}
            if job.kind == "image":
                entry["width"], entry["height"] = image_size(
                    fields["aspect_ratio"], state.scenario.image_size
                )
            results.append(entry)
    error = failure_message(job) if status == "error" else None
    if job.kind == "image":
        enhanced = fields["enhance_prompt"]
        prompt = f"{fields['delineation']}, highly detailed" if enhanced else fields["delineation"]
        item.update(
            {
                "engine": fields["engine"],
                "aspect_ratio": fields["aspect_ratio"],
                "delineation": fields["delineation"],
                "context": fields["context"],
                "enhance_prompt": enhanced,
                "prompt": prompt if status != "init" else None,
                "error": error,
                "bulk": None,
                "status": status,
                "results": results,
                "usage_id": str(uuid.uuid5(uuid.NAMESPACE_OID, job.id)) if results else None,
            }
        )
        return item
    for key in ("user_prompt", "engine", "image_url", "url", "source_language",
                "target_language", "diarization", "enhanced"):  # fmt: skip
        if key in fields:
            item[key] = fields[key]
    # Video and subtitle items have no `status` (docs/apis/pixy.md); the base library has no
    # cancelled task status, so a cancelled job shows as an error saying so.
    if status == "cancelled":
        error = "cancelled"
    item["error"] = error
    item["results"] = results
    return item
