"""Every error pollkit raises, in one tree.

```
PollkitError
├── ConfigurationError (also ValueError)      bad arguments, invalid specs, missing keys
│   └── UnsupportedOperation                  the API cannot do this (e.g. cancel on Magic Hour)
├── TransportError                            no usable HTTP reply
│   ├── ConnectError                          could not connect, or the connection broke
│   ├── ReadTimeout (also TimeoutError)       the server stopped answering
│   └── ProtocolError                         the reply is not JSON, or not the expected shape
├── APIError                                  the server answered with an error status
│   ├── AuthenticationError                   401, 403
│   ├── NotFound                              404
│   ├── InvalidRequest                        400, 422 (server's details in `details`)
│   ├── NotReady                              425: an output (an archive) is still being built
│   ├── RateLimited                           429 (`retry_after` when the server sent it)
│   └── ServerError                           5xx
├── JobOutcomeError                           the job ended, but not in `complete`
│   ├── JobFailed                             status `error`
│   └── JobCanceled                           status `canceled`
├── PollTimeout (also TimeoutError)           the deadline passed; carries the last state seen
└── DownloadError                             an output could not be saved
    ├── IncompleteDownload                    fewer bytes than announced
    ├── ChecksumMismatch                      the bytes are not the announced ones
    ├── UnsafePath                            a name would write outside the target directory
    ├── URLExpired                            the signed URL answers 403/410
    └── StorageError                          the disk said no (full, read-only, not a directory)
```

Messages are one line, name the operation and the job, and never contain an API key or a
signed URL's query string. aiohttp and pydantic errors never escape: they are the `__cause__`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pollkit.models import JobState

__all__ = [
    "APIError",
    "AuthenticationError",
    "ChecksumMismatch",
    "ConfigurationError",
    "ConnectError",
    "DownloadError",
    "IncompleteDownload",
    "InvalidRequest",
    "JobCanceled",
    "JobFailed",
    "JobOutcomeError",
    "NotFound",
    "NotReady",
    "PollTimeout",
    "PollkitError",
    "ProtocolError",
    "RateLimited",
    "ReadTimeout",
    "ServerError",
    "StorageError",
    "TransportError",
    "URLExpired",
    "UnsafePath",
    "UnsupportedOperation",
]


def _where(operation: str | None, job_id: str | None) -> str:
    subject = f"job {job_id}" if job_id else None
    if subject and operation and operation.split()[-1] == "job":
        subject = job_id  # "get job <id>", not "get job job <id>"
    parts = [p for p in (operation, subject) if p]
    return f"{' '.join(parts)}: " if parts else ""


class PollkitError(Exception):
    """Base of every error pollkit raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(PollkitError, ValueError):
    """An argument, a spec or a setting is invalid; nothing was sent."""


class UnsupportedOperation(ConfigurationError):
    """The provider's API has no way to do what was asked."""


class TransportError(PollkitError):
    """No usable HTTP reply: connection failure, timeout, or a reply that cannot be read.

    Attributes:
        operation: What pollkit was doing (``"get job"``).
        job_id: The job concerned, if any.
    """

    def __init__(
        self, message: str, *, operation: str | None = None, job_id: str | None = None
    ) -> None:
        super().__init__(f"{_where(operation, job_id)}{message}")
        self.operation = operation
        self.job_id = job_id


class ConnectError(TransportError):
    """The connection could not be made, or broke before a complete reply."""


class ReadTimeout(TransportError, TimeoutError):
    """The server did not answer in time."""


class ProtocolError(TransportError):
    """The reply is not what the API promises (not JSON, or JSON of the wrong shape)."""


class APIError(PollkitError):
    """The server answered with an error status.

    Attributes:
        status_code: The HTTP status.
        message: One line: operation, job, and the server's own message.
        server_message: The message the server put in its body, if any.
        body: The decoded JSON body (or the text when it is not JSON).
        headers: The response headers.
        operation: What pollkit was doing.
        job_id: The job concerned, if any.
    """

    def __init__(
        self,
        *,
        status_code: int,
        server_message: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        operation: str | None = None,
        job_id: str | None = None,
    ) -> None:
        detail = server_message or "no message"
        super().__init__(f"{_where(operation, job_id)}HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.server_message = server_message
        self.body = body
        # Kept as given: aiohttp's header maps are case-insensitive.
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.operation = operation
        self.job_id = job_id


class AuthenticationError(APIError):
    """401 or 403: the API key is missing, wrong or not allowed to do this."""


class NotFound(APIError):
    """404: no such job (or it was deleted)."""


class InvalidRequest(APIError):
    """400 or 422: the server rejected the request.

    Attributes:
        details: The server's field-level details when it gave any, else an empty list.
    """

    def __init__(self, *, details: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.details: list[Any] = list(details or [])


class NotReady(APIError):
    """425 Too Early: the output exists but is not ready yet (an archive still being packed).

    Not a failure of the job: downloads wait for it on the `DownloadPolicy.not_ready` cadence.
    """


class RateLimited(APIError):
    """429: too many requests.

    Attributes:
        retry_after: Seconds the server asked to wait, when it said.
    """

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed."""


class JobOutcomeError(PollkitError):
    """The job reached a terminal status other than `complete`.

    Attributes:
        state: The final state.
    """

    verb = "ended"

    def __init__(self, *, state: JobState) -> None:
        reason = f": {state.error}" if state.error else ""
        super().__init__(f"{state.provider} job {state.job_id} {self.verb}{reason}")
        self.state = state


class JobFailed(JobOutcomeError):
    """The job ended in `error`."""

    verb = "failed"


class JobCanceled(JobOutcomeError):
    """The job ended in `canceled`."""

    verb = "was canceled"


class PollTimeout(PollkitError, TimeoutError):
    """The job was not terminal when the deadline passed.

    Attributes:
        job_id: The job waited for.
        timeout: The deadline in seconds.
        state: The last state seen (None if no poll succeeded).
        hint: What the provider adds, e.g. that an id the API cannot tell from a queued job
            may be wrong.
    """

    def __init__(
        self,
        *,
        job_id: str,
        timeout: float,
        state: JobState | None,
        hint: str | None = None,
    ) -> None:
        last = f"last status {state.status.value}" if state else "no status seen"
        tail = f"; {hint}" if hint else ""
        super().__init__(f"wait job {job_id}: not finished after {timeout:g} s ({last}){tail}")
        self.job_id = job_id
        self.timeout = timeout
        self.state = state
        self.hint = hint


class DownloadError(PollkitError):
    """An output could not be saved.

    Attributes:
        job_id: The job whose output it is, if any.
        url: The URL without its query string (signed URLs carry secrets there).
        path: The target file.
        operation: What was being done, for the message (``"download"``; the journal says
            its own).
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        url: str | None = None,
        path: str | None = None,
        operation: str | None = "download",
    ) -> None:
        target = f" ({path})" if path else ""
        super().__init__(f"{_where(operation, job_id)}{message}{target}")
        self.job_id = job_id
        self.url = url.split("?", 1)[0] if url else None
        self.path = path


class IncompleteDownload(DownloadError):
    """The body ended before the announced length."""


class ChecksumMismatch(DownloadError):
    """The bytes received do not match the announced size or checksum."""


class UnsafePath(DownloadError):
    """A file name or archive entry would land outside the target directory."""


class URLExpired(DownloadError):
    """The download URL answered 403 or 410 (expired or revoked)."""


class StorageError(DownloadError):
    """Writing failed: disk full, read-only directory, or a file where a directory should be."""
