"""One module per API. A provider builds requests and parses replies; it never does I/O."""

from pollkit.providers.base import FormPart, Provider, Request, Response, Submission
from pollkit.providers.flux0 import Flux0
from pollkit.providers.magichour import MagicHour
from pollkit.providers.pixy import Pixy
from pollkit.providers.pixy_properties import (
    ImageGenProperties,
    SubtitleGenProperties,
    VideoGenProperties,
)
from pollkit.providers.pixyz import Pixyz

__all__ = [
    "Flux0",
    "FormPart",
    "ImageGenProperties",
    "MagicHour",
    "Pixy",
    "Pixyz",
    "Provider",
    "Request",
    "Response",
    "Submission",
    "SubtitleGenProperties",
    "VideoGenProperties",
]
