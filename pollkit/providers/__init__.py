"""One module per API. A provider builds requests and parses replies; it never does I/O."""

from pollkit.providers.base import FormPart, Provider, Request, Response, Submission
from pollkit.providers.magichour import MagicHour

__all__ = ["FormPart", "MagicHour", "Provider", "Request", "Response", "Submission"]
