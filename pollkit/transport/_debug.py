"""``POLLKIT_DEBUG``: turn on pollkit's debug log from the environment, without code changes.

Set ``POLLKIT_DEBUG=1`` (any value but empty, ``0``, ``false``, ``no`` or ``off``) and every
client or command logs each request and response line, with timings, to standard error. The
lines never hold an API key, a token or a signed URL's query string: URLs are logged without
their query, headers are not logged, and error messages are scrubbed of the provider's secrets.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, TextIO

__all__ = ["ENV_VAR", "debug_requested", "enable_debug_logging"]

ENV_VAR = "POLLKIT_DEBUG"
_OFF = frozenset({"", "0", "false", "no", "off"})


# StreamHandler is generic for type checkers only: subscripting it at run time fails before 3.11.
if TYPE_CHECKING:
    _StreamHandler = logging.StreamHandler[TextIO]
else:
    _StreamHandler = logging.StreamHandler


class _StderrHandler(_StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (a test may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # always the current stderr, whatever was given
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # set by StreamHandler.__init__; the property above is what counts


def debug_requested() -> bool:
    """Whether the environment asks for pollkit's debug log."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in _OFF


def enable_debug_logging() -> None:
    """Log everything under the ``pollkit`` logger at DEBUG to standard error (once)."""
    root = logging.getLogger("pollkit")
    root.setLevel(logging.DEBUG)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(handler)
