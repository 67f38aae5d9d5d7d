"""Magic Hour v1 projects: images and videos created by one of many tools, polled by id.

A spec names its tool (the create endpoint's last path segment) and carries that endpoint's JSON
body::

    {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a harbour at dawn"}}

The three documented tools (`ai-image-generator`, `text-to-video`, `animation`) are validated
before anything is sent; other tools are passed through as they are.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pollkit.core.naming import name_field, safe_name
from pollkit.errors import ConfigurationError, ProtocolError
from pollkit.models import ErrorInfo, JobState, Output, Status
from pollkit.providers.base import (
    Notification,
    Provider,
    Request,
    Response,
    Submission,
    setting,
)

__all__ = ["MagicHour"]

DEFAULT_BASE_URL = "https://api.magichour.ai"

# Where each tool's projects are polled, from the OpenAPI document: image tools answer
# `frame_cost`, audio tools neither cost key, every other tool is a video tool.
_IMAGE_TOOLS = frozenset(
    {
        "ai-image-generator",
        "body-swap",
        "ai-headshot-generator",
        "ai-image-editor",
        "ai-image-upscaler",
        "ai-meme-generator",
        "ai-qr-code-generator",
        "ai-clothes-changer",
        "ai-face-editor",
        "ai-gif-generator",
        "face-swap-photo",
        "image-background-remover",
        "photo-colorizer",
        "head-swap",
    }
)
_AUDIO_TOOLS = frozenset({"ai-voice-generator", "ai-voice-cloner"})
# Create endpoints that do not make a project (they are polled elsewhere).
_NOT_PROJECTS = frozenset({"face-detection", "files/upload-urls"})
_KINDS = ("image", "video", "audio")
_STATUSES = {s.value: s for s in Status}


class _Style(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)


class _ImageSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    image_count: int = Field(ge=1, le=16)
    style: _Style


class _TextToVideoSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    end_seconds: float = Field(ge=1, le=60)
    style: _Style


class _AnimationStyle(BaseModel):
    model_config = ConfigDict(extra="allow")
    art_style: str
    art_style_custom: str | None = None
    camera_effect: str
    prompt_type: str
    prompt: str | None = None
    transition_speed: int = Field(ge=1, le=10)

    @model_validator(mode="after")
    def _conditional_fields(self) -> _AnimationStyle:
        if self.art_style == "Custom" and not self.art_style_custom:
            raise ValueError("art_style_custom is required when art_style is 'Custom'")
        if self.prompt_type == "custom" and not self.prompt:
            raise ValueError("prompt is required when prompt_type is 'custom'")
        return self


class _AnimationAssets(BaseModel):
    model_config = ConfigDict(extra="allow")
    audio_source: Literal["none", "file", "youtube"]


class _AnimationSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    fps: float = Field(ge=1)
    end_seconds: float = Field(ge=0.1)
    width: int = Field(ge=64)
    height: int = Field(ge=64)
    style: _AnimationStyle
    assets: _AnimationAssets


_SPEC_MODELS: dict[str, type[BaseModel]] = {
    "ai-image-generator": _ImageSpec,
    "text-to-video": _TextToVideoSpec,
    "animation": _AnimationSpec,
}


class _Download(BaseModel):
    url: str = Field(min_length=1)
    expires_at: datetime | None = None

    @field_validator("url")
    @classmethod
    def _readable(cls, url: str) -> str:
        urlsplit(url)  # ValueError for what no client can fetch ("http://[x/a.png")
        return url

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, moment: datetime | None) -> datetime | None:
        # The API writes UTC ("…Z"); a time without an offset is read as UTC too, so that the
        # downloader can compare it with an aware now().
        if moment is not None and moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment


class _ProjectError(BaseModel):
    code: str | None = None
    message: str = ""


class _Project(BaseModel):
    """The keys pollkit reads; the rest stays in `JobState.raw`."""

    id: str
    status: str
    enabled: bool = True
    downloads: list[_Download] = []
    download: _Download | None = None
    error: _ProjectError | None = None


class _Created(BaseModel):
    id: str = Field(min_length=1)


def _spec_error(tool: str, exc: ValidationError) -> ConfigurationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    return ConfigurationError(f"magichour {tool} spec: {where}: {first['msg']}")


class MagicHour(Provider):
    """The Magic Hour v1 API.

    Args:
        api_key: The bearer token; default: the ``MAGIC_HOUR_API_KEY`` environment variable.
        base_url: Where the API lives (the simulator's `sim.url` in tests); default:
            ``MAGIC_HOUR_BASE_URL``, else ``https://api.magichour.ai``.

    Raises:
        ConfigurationError: No key, or the URL is not http(s).
    """

    name = "magichour"
    #: The environment variables read for a key and a base URL that were not passed.
    ENV_API_KEY = "MAGIC_HOUR_API_KEY"
    ENV_BASE_URL = "MAGIC_HOUR_BASE_URL"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None) -> None:
        super().__init__()
        api_key = setting(api_key, self.ENV_API_KEY)
        base_url = setting(base_url, self.ENV_BASE_URL, DEFAULT_BASE_URL)
        if not api_key or not api_key.strip():
            raise ConfigurationError(
                f"magichour: no API key (pass api_key= or set {self.ENV_API_KEY})"
            )
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"magichour: base_url must be http(s), got {base_url!r}")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")

    @property
    def secrets(self) -> Sequence[str]:
        """The API key."""
        return (self._api_key,)

    def _request(self, method: str, path: str, operation: str, **kwargs: Any) -> Request:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        return Request(method, f"{self.base_url}{path}", operation, headers=headers, **kwargs)

    @staticmethod
    def kind_of_tool(tool: str) -> str:
        """``"image"``, ``"video"`` or ``"audio"``: where projects made by `tool` are polled."""
        if tool in _IMAGE_TOOLS:
            return "image"
        return "audio" if tool in _AUDIO_TOOLS else "video"

    def submit_request(self, spec: Mapping[str, Any]) -> Request:
        """``POST /v1/<tool>`` with the rest of the spec as the JSON body."""
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"magichour spec must be a mapping, got {type(spec).__name__}")
        tool = spec.get("tool")
        if not isinstance(tool, str) or not tool or "/" in tool:
            raise ConfigurationError("magichour spec: 'tool' must name a create endpoint")
        if tool in _NOT_PROJECTS:
            raise ConfigurationError(f"magichour spec: {tool!r} does not create a project")
        body = {k: v for k, v in spec.items() if k != "tool"}
        model = _SPEC_MODELS.get(tool)
        if model is not None:
            try:
                model.model_validate(body)
            except ValidationError as exc:
                raise _spec_error(tool, exc) from exc
        try:  # the fields passed through unchecked must still make a JSON body
            json.dumps(body, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"magichour {tool} spec: not JSON: {exc}") from exc
        return self._request("POST", f"/v1/{tool}", f"submit {tool}", json_body=body)

    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        """The new project's id; its kind follows from the tool."""
        payload = response.json()
        try:
            created = _Created.model_validate(payload)
        except ValidationError as exc:
            raise ProtocolError(
                "create reply has no project id", operation=response.request.operation
            ) from exc
        try:
            self._kinds(created.id, None)
        except ConfigurationError as exc:
            raise ProtocolError(
                f"create reply has an invalid project id {created.id[:40]!r}",
                operation=response.request.operation,
            ) from exc
        tool = response.request.url.rsplit("/", 1)[-1]
        return Submission(created.id, self.kind_of_tool(tool), observed_at, payload)

    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """``GET /v1/<kind>-projects/<id>``; both kinds in turn when the kind is unknown."""
        return [
            self._request("GET", f"/v1/{k}-projects/{job_id}", "get project", job_id=job_id)
            for k in self._kinds(job_id, kind)
        ]

    def delete_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """``DELETE /v1/<kind>-projects/<id>`` (204)."""
        return [
            self._request("DELETE", f"/v1/{k}-projects/{job_id}", "delete project", job_id=job_id)
            for k in self._kinds(job_id, kind)
        ]

    @staticmethod
    def _kinds(job_id: str, kind: str | None) -> tuple[str, ...]:
        if not job_id or "/" in job_id or job_id.strip() != job_id:
            raise ConfigurationError(f"magichour: invalid project id {job_id!r}")
        if kind is None:
            return _KINDS
        if kind not in _KINDS:
            raise ConfigurationError(f"magichour: kind must be one of {_KINDS}, got {kind!r}")
        return (kind,)

    def name_fields(self, state: JobState) -> dict[str, str]:
        """``{project_name}`` (the project's name, or its id) and ``{type}`` (``AI_IMAGE``…)."""
        raw = state.raw
        return {
            "project_name": name_field(raw.get("name") or state.job_id),
            "type": name_field(raw.get("type") or state.kind or "project"),
        }

    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """Map a project object onto a `JobState` (docs/apis/magichour.md#status-map)."""
        payload = response.json()
        job_id = response.request.job_id or ""
        try:
            project = _Project.model_validate(payload)
        except ValidationError as exc:
            raise ProtocolError(
                f"project reply does not fit the schema: {exc.errors()[0]['msg']}",
                operation=response.request.operation,
                job_id=job_id,
            ) from exc
        if job_id and project.id != job_id:
            raise ProtocolError(
                f"project reply is about another project, {project.id[:40]!r}",
                operation=response.request.operation,
                job_id=job_id,
            )
        kind = response.request.url.rsplit("/v1/", 1)[-1].split("-projects/", 1)[0]
        status = _STATUSES.get(project.status)
        error: ErrorInfo | None = None
        if status is None:
            self.log_unknown_status(project.status, project.id)
            keep = previous.status if previous and not previous.is_terminal else Status.QUEUED
            status = keep
        if status is Status.ERROR:
            err = project.error or _ProjectError(message="the project failed")
            error = ErrorInfo(err.code, err.message or "the project failed")
        if not project.enabled and not status.is_terminal:
            status, error = Status.ERROR, ErrorInfo("deleted", "the project was deleted")
        if previous is not None and previous.is_terminal and status is not previous.status:
            return replace(previous, observed_at=observed_at)  # terminal states are sticky
        outputs: tuple[Output, ...] = ()
        if status is Status.COMPLETE:
            entries = project.downloads or ([project.download] if project.download else [])
            outputs = tuple(
                Output(
                    url=d.url,
                    index=i,
                    name=_basename(d.url),
                    expires_at=d.expires_at,
                )
                for i, d in enumerate(entries)
            )
        return JobState(
            provider=self.name,
            job_id=project.id,
            status=status,
            native_status=project.status,
            observed_at=observed_at,
            outputs=outputs,
            error=error,
            kind=kind,
            raw=payload,
        )

    def parse_notification(self, payload: Any) -> Notification | None:
        """An account webhook, ``{"type": "<kind>.<event>", "payload": <project>}``.

        Events (``started``, ``completed``, ``errored``) carry the project as a GET shows it;
        an unknown kind is not followed (None). Magic Hour sends no webhook for ``canceled``:
        only a poll sees a cancellation.

        Raises:
            ProtocolError: The payload is not a webhook of that shape.
        """
        event = payload.get("type") if isinstance(payload, Mapping) else None
        project = payload.get("payload") if isinstance(payload, Mapping) else None
        if not isinstance(event, str) or not isinstance(project, Mapping):
            raise ProtocolError("webhook is not {type, payload}", operation="webhook")
        kind = event.partition(".")[0]
        if kind not in _KINDS:
            return None
        job_id = project.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ProtocolError(f"{event} webhook names no project id", operation="webhook")
        return Notification(job_id, kind, project)


def _basename(url: str) -> str | None:
    name = posixpath.basename(unquote(urlsplit(url).path))
    return name if safe_name(name) else None  # not "..", nor "a\\b" once decoded
