"""One module per API. A provider builds requests and parses replies; it never does I/O."""

from typing import TYPE_CHECKING

from pollkit._lazy import exports

# The base types are what every provider and the transport need; each provider is imported
# when first used (see pollkit._lazy), so the transport does not load all four.
from pollkit.providers.base import FormPart, Provider, Request, Response, Submission

if TYPE_CHECKING:
    from pollkit.providers.flux0 import Flux0
    from pollkit.providers.magichour import MagicHour
    from pollkit.providers.pixy import Pixy
    from pollkit.providers.pixy_properties import (
        ImageGenProperties,
        SubtitleGenProperties,
        VideoGenProperties,
    )
    from pollkit.providers.pixyz import Pixyz

__getattr__, __dir__ = exports(
    __name__,
    globals(),
    {
        "pollkit.providers.flux0": ("Flux0",),
        "pollkit.providers.magichour": ("MagicHour",),
        "pollkit.providers.pixy": ("Pixy",),
        "pollkit.providers.pixy_properties": (
            "ImageGenProperties",
            "SubtitleGenProperties",
            "VideoGenProperties",
        ),
        "pollkit.providers.pixyz": ("Pixyz",),
    },
)

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
