"""What a Pixy job is made of: the three property models, checked before anything is sent.

The tables of engines, aspect ratios and languages are those of the Pixy SDK's documentation
(``pixiee-ai/pixy-sdk``, ``docs/schemas.md``, April 2025). Each model is posted whole: optional
keys the caller left out go with their default or ``null``, never omitted (docs/apis/pixy.md).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "ASPECT_RATIOS",
    "IMAGE_TO_VIDEO_ENGINES",
    "LANGUAGES",
    "TEXT_TO_VIDEO_ENGINES",
    "ImageGenProperties",
    "PixyProperties",
    "SubtitleGenProperties",
    "VideoGenProperties",
]

ImageEngine = Literal[
    "flux_schnell",
    "flux_1.1",
    "flux_pro",
    "imagen",
    "photon_flash",
    "photon",
    "dalle",
    "ideogram_turbo",
    "ideogram",
    "midjourney",
    "stability",
]
VideoEngine = Literal[
    "hailou",
    "kling",
    "hunyuanimageto",
    "runway",
    "minimax",
    "hailoutext",
    "klingtext",
    "klingprotext",
    "klingpro",
    "hunyuan",
    "luma",
]
Language = Literal[
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
#: The 23 language names a subtitle job accepts (``auto`` is also allowed as the source).
LANGUAGES: tuple[str, ...] = get_args(Language)

_FLUX = ("4:5", "9:16", "3:2", "1:1", "21:9", "16:9", "9:21", "4:3", "3:4", "2:3", "5:4")
_IDEOGRAM = ("9:16", "3:2", "16:10", "1:1", "16:9", "3:1", "10:16", "4:3", "3:4", "2:3", "1:3")
_PHOTON = ("9:16", "1:1", "21:9", "9:21", "16:9", "4:3", "3:4")
#: Aspect ratios each image engine accepts.
ASPECT_RATIOS: dict[str, frozenset[str]] = {
    "flux_schnell": frozenset(_FLUX),
    "flux_1.1": frozenset(_FLUX),
    "flux_pro": frozenset(_FLUX) - {"21:9", "9:21"},
    "imagen": frozenset({"9:16", "1:1", "16:9", "4:3", "3:4"}),
    "photon_flash": frozenset(_PHOTON),
    "photon": frozenset(_PHOTON),
    "dalle": frozenset({"1:1", "4:7", "7:4"}),
    "ideogram_turbo": frozenset(_IDEOGRAM),
    "ideogram": frozenset(_IDEOGRAM),
    "midjourney": frozenset(_FLUX) | frozenset(_IDEOGRAM) | {"7:4", "4:7"},
    "stability": frozenset(_FLUX),
}
#: Video engines that animate an image: ``image_url`` is required.
IMAGE_TO_VIDEO_ENGINES = frozenset({"hailou", "kling", "hunyuanimageto", "runway", "minimax"})
#: Video engines that work from text alone: ``image_url`` is refused.
TEXT_TO_VIDEO_ENGINES = frozenset(
    {"hailoutext", "klingtext", "klingprotext", "klingpro", "hunyuan", "luma"}
)


def _http_url(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{field} must be an http(s) URL")
    return value


class PixyProperties(BaseModel):
    """What the three property models share: frozen, no unknown keys, and `as_spec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The generation type the model describes (``"image"``, ``"video"``, ``"subtitle"``).
    kind: ClassVar[str]

    def as_spec(self) -> dict[str, Any]:
        """The spec `AsyncClient.submit` and `run` take: ``{"type": kind, **every field}``."""
        return {"type": self.kind, **self.model_dump(mode="json")}


class ImageGenProperties(PixyProperties):
    """An image job.

    Attributes:
        engine: One of the eleven image engines.
        aspect_ratio: Width:height, among those `ASPECT_RATIOS` allows for the engine.
        delineation: The prompt.
        context: Context objects for the engine (default ``[{}]``).
        enhance_prompt: Let the service rewrite the prompt first.
    """

    kind: ClassVar[str] = "image"

    engine: ImageEngine
    aspect_ratio: str = Field(default="1:1", validate_default=True)
    delineation: str = Field(min_length=1)
    context: list[dict[str, Any]] = Field(default_factory=lambda: [dict[str, Any]()])
    enhance_prompt: bool = False

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio_for_engine(cls, value: str, info: ValidationInfo) -> str:
        engine = info.data.get("engine")
        allowed = ASPECT_RATIOS.get(engine or "")
        if allowed is not None and value not in allowed:
            shown = ", ".join(sorted(allowed))
            raise ValueError(f"{value!r} is not available with engine {engine} (use {shown})")
        return value


class VideoGenProperties(PixyProperties):
    """A video job.

    Attributes:
        user_prompt: The prompt.
        engine: One of the eleven video engines.
        image_url: The image to animate: required by `IMAGE_TO_VIDEO_ENGINES`, refused by
            `TEXT_TO_VIDEO_ENGINES`.
        meta_data: Free-form metadata (``webhook`` / ``webhook_url`` keys are webhook targets).
        webhook_url: Where the service POSTs the item on every save.
    """

    kind: ClassVar[str] = "video"

    user_prompt: str = Field(min_length=1)
    engine: VideoEngine
    image_url: str | None = Field(default=None, validate_default=True)
    meta_data: dict[str, Any] | None = None
    webhook_url: str | None = None

    @field_validator("image_url")
    @classmethod
    def _image_for_engine(cls, value: str | None, info: ValidationInfo) -> str | None:
        engine = info.data.get("engine")
        if engine in IMAGE_TO_VIDEO_ENGINES and not value:
            raise ValueError(f"engine {engine} animates an image: image_url is required")
        if engine in TEXT_TO_VIDEO_ENGINES and value:
            raise ValueError(f"engine {engine} works from text only: leave image_url out")
        return _http_url(value, "image_url")

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return _http_url(value, "webhook_url")


class SubtitleGenProperties(PixyProperties):
    """A subtitle job.

    Attributes:
        url: The video or audio to transcribe.
        source_language: ``auto`` or one of `LANGUAGES`.
        target_language: One of `LANGUAGES` (default ``Persian``).
        diarization: Label the lines by speaker.
        enhanced: Higher-quality transcription.
        meta_data: Free-form metadata (``webhook`` / ``webhook_url`` keys are webhook targets).
        webhook_url: Where the service POSTs the item on every save.
    """

    kind: ClassVar[str] = "subtitle"

    url: str
    source_language: Language | Literal["auto"] = "auto"
    target_language: Language = "Persian"
    diarization: bool = False
    enhanced: bool = True
    meta_data: dict[str, Any] | None = None
    webhook_url: str | None = None

    @field_validator("url")
    @classmethod
    def _media(cls, value: str) -> str:
        checked = _http_url(value, "url")
        assert checked is not None
        return checked

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        return _http_url(value, "webhook_url")
