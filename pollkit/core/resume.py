"""Whether a partial download can be continued, from what is on disk and what the server said."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Partial", "ResumeAction", "decide", "range_headers", "total_size"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True, slots=True)
class Partial:
    """A `.part` file left by an earlier attempt.

    Attributes:
        size: Bytes already on disk.
        etag: The ETag of the reply those bytes came from.
        last_modified: Its Last-Modified.
    """

    size: int
    etag: str | None = None
    last_modified: str | None = None

    @property
    def validator(self) -> str | None:
        """What to send in If-Range: a strong ETag, else the date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class ResumeAction(enum.Enum):
    """What to do with a reply to a (possibly ranged) GET."""

    APPEND = "append"  # 206 from where the part ends: keep the bytes, write the rest
    RESTART = "restart"  # 200, or a range that does not fit: truncate and write the body
    COMPLETE = "complete"  # 416 and the part already holds the whole file


def range_headers(partial: Partial | None) -> dict[str, str]:
    """Headers that ask for the rest of `partial` (none when it cannot be validated)."""
    if partial is None or partial.size <= 0 or partial.validator is None:
        return {}
    return {"Range": f"bytes={partial.size}-", "If-Range": partial.validator}


def total_size(status: int, headers: Mapping[str, str]) -> int | None:
    """The full length of the file, from Content-Range (206, 416) or Content-Length (200)."""
    content_range = headers.get("Content-Range")
    if content_range:
        total = content_range.rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    length = headers.get("Content-Length")
    return int(length) if status == 200 and length and length.isdigit() else None


def decide(partial: Partial | None, status: int, headers: Mapping[str, str]) -> ResumeAction:
    """Continue, restart or finish, given the reply to the request `range_headers` built.

    Raises:
        ValueError: A status that is not 200, 206 or 416.
    """
    have = partial.size if partial else 0
    if status == 200:
        return ResumeAction.RESTART
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if match and int(match.group(1)) == have and have > 0:
            return ResumeAction.APPEND
        return ResumeAction.RESTART  # a range we did not ask for: do not mix bytes
    if status == 416:
        total = total_size(status, headers)
        if total is not None and total == have:
            return ResumeAction.COMPLETE
        return ResumeAction.RESTART
    raise ValueError(f"no resume decision for HTTP {status}")
