"""Every error pollkit raises, in one tree.

```
PollkitError
├── ConfigurationError (also ValueError)      bad arguments, invalid specs, missing keys
│   └── UnsupportedOperation                  the API cannot do this (e.g. cancel on Magic Hour)
├── AmbiguousSubmit                           a submit may or may not have created its job
├── JournalBusy                               another live run holds the batch's journal
├── TransportError                            no usable HTTP reply (`sent`: may it have left?)
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
    "AmbiguousSubmit",
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
    "JournalBusy",
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
        sent: False only when the request certainly never left: the connection was never
            made (refused, DNS, TLS handshake, connect timeout). True when the server may have
            received it (a reset or a timeout after the request was written).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        job_id: str | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(f"{_where(operation, job_id)}{message}")
        self.operation = operation
        self.job_id = job_id
        self.sent = sent


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


class AmbiguousSubmit(PollkitError):
    """A submit may have created its job, and pollkit could not find out.

    The request reached the server (or a previous run stopped while it was in flight) and no
    answer says what happened: a 500, 502 or 504, a connection reset or a timeout after the
    request was sent. Where the API lists jobs by a tag pollkit sets at submit (PiXYZ's
    ``name``), the batch looks the tag up instead and raises this only when that cannot tell.

    Attributes:
        key: The spec's key.
        provider: The provider's name.
        reason: What happened to the submit, one line.
        can_look_up: Whether the API could in principle say if the job exists (False: Magic
            Hour, which has no list endpoint).
    """

    def __init__(self, *, key: str, provider: str, reason: str, can_look_up: bool) -> None:
        if can_look_up:
            advice = "looking its tag up did not tell"
        else:
            advice = f"{provider} has no way to ask whether the job exists"
        super().__init__(
            f"spec {key}: its submit may have created a job ({reason}); {advice}. Submit it"
            " again with resubmit_ambiguous=True (it may be paid twice)"
        )
        self.key = key
        self.provider = provider
        self.reason = reason
        self.can_look_up = can_look_up


class JournalBusy(PollkitError):
    """Another live run holds the batch's journal; nothing was sent.

    A journal has one live run at a time: two runs of one batch would both submit the specs
    neither has recorded yet. The other run is named so it can be waited for or stopped.

    Attributes:
        path: The journal.
        pid: The other run's process id, when it wrote it.
        host: The other run's host name, when it wrote it.
        since: When the other run started (ISO 8601, UTC), when it wrote it.
    """

    def __init__(self, *, path: str, pid: int | None, host: str | None, since: str | None) -> None:
        who = f"pid {pid} on {host or 'an unknown host'}" if pid else "another process"
        when = f" since {since}" if since else ""
        super().__init__(f"journal {path} is in use by another run ({who}{when})")
        self.path = path
        self.pid = pid
        self.host = host
        self.since = since


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
