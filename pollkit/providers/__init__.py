"""One module per API. A provider builds requests and parses replies; it never does I/O."""

from pollkit.providers.base import Provider, Request, Response, Submission
from pollkit.providers.magichour import MagicHour

__all__ = ["MagicHour", "Provider", "Request", "Response", "Submission"]
