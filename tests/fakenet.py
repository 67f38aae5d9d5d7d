"""`aioresponses`, made to work with aiohttp ≥ 3.14.

aiohttp 3.14 added a required ``stream_writer`` argument to `ClientResponse`, which aioresponses
0.7.9 does not pass (pnuckowski/aioresponses#289, open). Pinning aiohttp below 3.14 would hold
users back from a security release, so the tests give aioresponses a response class that
supplies a finished writer instead. Import `aioresponses` from here in tests.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiohttp
from aioresponses import aioresponses
from aioresponses import core as _core

__all__ = ["aioresponses"]


class _SentWriter:
    """Stands for the writer of a request that was already sent."""

    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentWriter())
        super().__init__(*args, **kwargs)


if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
    _core.ClientResponse = _CompatResponse  # type: ignore[misc]
