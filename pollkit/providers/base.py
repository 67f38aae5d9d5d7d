"""What every provider is: a translator between pollkit's model and one API's wire format.

A provider builds `Request`s and parses `Response`s; it never opens a socket, sleeps or retries.
That is `pollkit.transport._http`'s job, driven by the engine.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pollkit.core import jsonbody
from pollkit.errors import ConfigurationError, ProtocolError, UnsupportedOperation
from pollkit.models import JobState

__all__ = [
    "FormPart",
    "Notification",
    "Provider",
    "Request",
    "Response",
    "Submission",
    "setting",
]

_log = logging.getLogger("pollkit.providers")

_P = TypeVar("_P", bound="Provider")


def setting(value: str | None, variable: str, default: str = "") -> str:
    """A provider's setting: `value` when given, else the environment `variable` (when set and
    not empty), else `default`."""
    if value is not None:
        return value
    return os.environ.get(variable) or default


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a ``multipart/form-data`` body: a text value, or a file streamed from disk.

    Attributes:
        name: The form field's name.
        value: The text of a text part.
        path: The file of a file part (read when the request is sent, again on each retry).
        filename: The file name the server is told (default: the path's name).
        content_type: The part's media type (default ``application/octet-stream`` for files).
    """

    name: str
    value: str | None = None
    path: Path | None = None
    filename: str | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.path is None):
            raise ValueError(f"form part {self.name!r}: give exactly one of value and path")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, described, not sent.

    The body is `json_body` (JSON) or `form` (multipart), never both. `headers` may hold
    credentials, so it is left out of the repr.
    """

    method: str
    url: str
    operation: str
    job_id: str | None = None
    json_body: Any = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    form: tuple[FormPart, ...] | None = None
    #: The jobs a list request is sent to read (batch polling), for the parser of its reply.
    job_ids: frozenset[str] = frozenset()

    @property
    def upload_bytes(self) -> int:
        """Total size of the files in `form` (0 when there are none)."""
        return sum(p.path.stat().st_size for p in self.form or () if p.path is not None)


@dataclass(frozen=True, slots=True)
class Response:
    """A complete HTTP reply, with the request it answers (for error messages)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    request: Request

    def json(self) -> Any:
        """The decoded JSON body.

        Raises:
            ProtocolError: The body is not JSON.
        """
        try:
            return jsonbody.loads(self.body)
        # Not UTF-8, not JSON, an integer longer than int() takes, or nested deeper than
        # jsonbody.MAX_DEPTH: all ValueErrors.
        except ValueError as exc:
            ctype = self.headers.get("Content-Type", "no content type")
            raise ProtocolError(
                f"reply is not JSON (HTTP {self.status}, {ctype}): {exc}",
                operation=self.request.operation,
                job_id=self.request.job_id,
            ) from exc


@dataclass(frozen=True, slots=True)
class Submission:
    """What a submit call returned: the new job's id, and what else the API said.

    Attributes:
        job_id: The id to poll.
        kind: The provider's job kind (``"image"``, ``"video"``…).
        submitted_at: When the reply arrived (UTC).
        raw: The decoded reply.
    """

    job_id: str
    kind: str | None
    submitted_at: datetime
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Notification:
    """What a server pushed about one job (a webhook, an event of a status stream).

    Attributes:
        job_id: The job it is about.
        kind: The provider's job kind, when the notification says (``"image"``…).
        body: The job as a status reply would show it; `Provider.notification_state` parses
            it with `Provider.parse_state`, so a notification and a poll read the same.
    """

    job_id: str
    kind: str | None
    body: Mapping[str, Any] = field(repr=False)


class Provider(ABC):
    """One API. Subclasses describe requests and parse replies; they never do I/O.

    Attributes:
        name: Short lowercase name (``"magichour"``), used in states and logs.
        base_url: Where the API lives, without a trailing slash.
    """

    name: str
    base_url: str

    def __init__(self) -> None:
        self._unknown_statuses_logged: set[str] = set()

    @property
    @abstractmethod
    def secrets(self) -> Sequence[str]:
        """Values that must never appear in a log line or an error message."""

    @abstractmethod
    def submit_request(self, spec: Mapping[str, Any]) -> Request:
        """The request that creates a job from `spec`.

        Raises:
            ConfigurationError: The spec is invalid; nothing should be sent.
        """

    @abstractmethod
    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        """The job created by a successful submit reply."""

    @abstractmethod
    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """Requests that read a job's status, to try in order while they answer 404.

        More than one only when the kind is unknown and the API routes by kind.
        """

    @abstractmethod
    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """The job state in a successful status reply.

        Raises:
            ProtocolError: The reply does not have the API's shape.
        """

    #: Most jobs one `batch_status_request` may ask about (0: the API has no list endpoint).
    batch_status_limit: int = 0

    def batch_status_request(self, job_ids: Sequence[str]) -> Request:
        """One request that reads the states of many jobs (for APIs with a list endpoint).

        Only called when `batch_status_limit` > 0, with at most that many ids.
        """
        raise UnsupportedOperation(f"{self.name} has no list endpoint")

    def parse_batch_states(
        self, response: Response, observed_at: datetime, previous: Mapping[str, JobState]
    ) -> dict[str, JobState]:
        """The states in a reply to `batch_status_request`, by job id (jobs it omits are absent).

        Raises:
            ProtocolError: The reply does not have the API's shape.
        """
        raise UnsupportedOperation(f"{self.name} has no list endpoint")

    #: Whether `tag_lookup_request` lists a job as soon as it is created. False (PiXYZ: no
    #: queued job is listed, nor its name before it runs): a tag not found proves nothing
    #: until `SubmitPolicy.lookup_window` has passed.
    lists_new_jobs: bool = True

    def submit_tag(self, spec: Mapping[str, Any], key: str) -> str | None:
        """The tag a submit of `spec` (journal key `key`) carries, by which `find_tagged` can
        later tell whether its job exists (None: this API has no list a submit can be found in).
        """
        return None

    def tagged(self, spec: Mapping[str, Any], tag: str) -> Mapping[str, Any]:
        """`spec` carrying `tag` in the field the API lists (unchanged by default)."""
        return spec

    def tag_lookup_request(self) -> Request:
        """The request that lists jobs with their tags (see `find_tagged`)."""
        raise UnsupportedOperation(f"{self.name} cannot list jobs by a tag")

    def find_tagged(self, response: Response, tags: Collection[str]) -> dict[str, list[str]]:
        """For each of `tags`, the ids of the jobs listed with it in a reply to
        `tag_lookup_request` (an empty list: none listed).

        Raises:
            ProtocolError: The reply does not have the API's shape.
        """
        raise UnsupportedOperation(f"{self.name} cannot list jobs by a tag")

    def parse_notification(self, payload: Any) -> Notification | None:
        """The job a webhook's decoded JSON body is about, and its state (None: the payload is
        not about a job's state, e.g. an event kind pollkit does not follow).

        Raises:
            UnsupportedOperation: The API sends no webhooks.
            ProtocolError: The payload does not have the API's webhook shape.
        """
        raise UnsupportedOperation(f"{self.name} sends no webhooks")

    def notification_state(
        self, notification: Notification, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """The job state a notification carries, read as a status reply would be.

        Raises:
            ProtocolError: The body does not have the API's shape.
        """
        request = self.status_requests(notification.job_id, notification.kind)[0]
        body = json.dumps(notification.body).encode()
        response = Response(200, {"Content-Type": "application/json"}, body, request)
        return self.parse_state(response, observed_at, previous)

    def startup_request(self) -> Request | None:
        """A request to send once before any other, e.g. to verify the API key (None: none).

        A reply other than 2xx makes every later call fail with `AuthenticationError`.
        """
        return None

    def outputs_request(self, state: JobState) -> Request | None:
        """For APIs whose status reply does not list a finished job's files: the request that
        does. Called once when a job is first seen `complete` with no outputs (None: the state
        already says everything).
        """
        return None

    def parse_outputs(self, response: Response, state: JobState) -> JobState:
        """`state` with the outputs listed in the reply to `outputs_request`.

        Raises:
            ProtocolError: The reply does not have the API's shape.
        """
        raise UnsupportedOperation(f"{self.name} lists outputs in its status replies")

    def download_headers(self, url: str) -> Mapping[str, str]:
        """Headers an output download needs (credentials for the API's own file routes).

        Implementations must return credentials only for URLs on the API's own host: a
        signed URL on a CDN must never receive the key.
        """
        return {}

    def timeout_hint(self, state: JobState | None) -> str | None:
        """A sentence added to `PollTimeout` when a wait on this job runs out."""
        return None

    def delete_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """Requests that delete a job, to try in order while they answer 404."""
        raise UnsupportedOperation(f"{self.name} has no delete endpoint")

    def parse_deleted(self, response: Response, observed_at: datetime) -> JobState | None:
        """The job's last state from a delete's reply, where the API sends it (default: None)."""
        return None

    def cancel_request(self, job_id: str, kind: str | None) -> Request:
        """The request that cancels a job."""
        raise UnsupportedOperation(f"{self.name} has no cancel endpoint")

    def name_fields(self, state: JobState) -> dict[str, str]:
        """Fields this API adds to the download name template, made fit for file names."""
        return {}

    def log_unknown_status(self, native: str, job_id: str) -> None:
        """Log an unrecognised native status once per provider (rule 1 of the status mapping)."""
        if native not in self._unknown_statuses_logged:
            self._unknown_statuses_logged.add(native)
            _log.warning(
                "%s job %s: unknown status %r, treated as not finished", self.name, job_id, native
            )

    def with_base_url(self: _P, base_url: str) -> _P:
        """The same provider (key, settings) talking to another server.

        Raises:
            ConfigurationError: `base_url` is not an http(s) URL.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"{self.name}: base_url must be http(s)://…, got {base_url!r}")
        twin = copy.copy(self)
        twin.base_url = base_url.rstrip("/")
        twin._forget()
        return twin

    def _forget(self) -> None:  # noqa: B027 - a hook: most providers learn nothing to drop
        """Drop what this instance learned of its server's jobs, so that a `with_base_url`
        copy, which talks to another server, shares none of it (default: nothing learned)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"
