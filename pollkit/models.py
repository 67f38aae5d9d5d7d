"""The canonical model every provider maps onto: `Status`, `JobState`, `Output`, `Result`.

These are plain frozen dataclasses: they are created on every poll, so they stay cheap, and they
are values (compare by content, hashable where their fields are).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "TERMINAL_STATUSES",
    "ErrorInfo",
    "Event",
    "JobState",
    "Output",
    "Result",
    "Status",
    "register_html",
]

# How a value renders as HTML in Jupyter, by type. The display package fills it when it is
# loaded (any client loads it): value types import nothing from display code.
_HTML_RENDERERS: dict[type, Callable[[Any], str]] = {}


def register_html(kind: type, render: Callable[[Any], str]) -> None:
    """Render values of `kind` with `render` in Jupyter (`_repr_html_`)."""
    _HTML_RENDERERS[kind] = render


class Status(str, enum.Enum):
    """pollkit's six job statuses (the Magic Hour vocabulary).

    `complete`, `error` and `canceled` are terminal; a job in any other status may still change.
    """

    DRAFT = "draft"
    QUEUED = "queued"
    RENDERING = "rendering"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """Whether a job in this status will never change again."""
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({Status.COMPLETE, Status.ERROR, Status.CANCELED})


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a job failed, as the API said it (`code` may be None when the API gives only text)."""

    code: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


@dataclass(frozen=True, slots=True)
class Output:
    """Where one result of a job lives, and what is known about it before downloading.

    Attributes:
        url: Absolute URL to fetch, or None for outputs addressed by `path` inside the job.
        index: Position of this output among the job's outputs (0-based).
        name: Suggested file name (no directories), e.g. ``output-0.png``.
        path: Path of the file inside the job, for file-list APIs.
        size: Size in bytes when the API says it.
        sha256: Hex digest when the API says it.
        media_type: MIME type when known.
        expires_at: When `url` stops working, if the API says so.
        is_archive: True when the output is a zip archive of several files.
    """

    url: str | None
    index: int = 0
    name: str | None = None
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    media_type: str | None = None
    expires_at: datetime | None = None
    is_archive: bool = False


@dataclass(frozen=True, slots=True)
class JobState:
    """One observation of a job: what the API said about it at `observed_at`.

    Attributes:
        provider: Name of the provider that produced it (``"magichour"``).
        job_id: The API's id of the job.
        status: pollkit's status.
        native_status: The API's own status string, kept verbatim.
        observed_at: When the reply was received (UTC).
        progress: 0–1 when the API reports progress, else None.
        queue_position: Position in the queue when the API says it.
        eta_seconds: The API's estimate of the time left, in seconds.
        outputs: Where the results are (empty until complete).
        error: Why the job failed, for `Status.ERROR` (and sometimes `CANCELED`).
        kind: The provider's job kind (``"image"``, ``"video"``…), used for routing and naming.
        raw: The decoded reply, unmodified.
    """

    provider: str
    job_id: str
    status: Status
    native_status: str
    observed_at: datetime
    progress: float | None = None
    queue_position: int | None = None
    eta_seconds: float | None = None
    outputs: tuple[Output, ...] = ()
    error: ErrorInfo | None = None
    kind: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether this observation is final."""
        return self.status.is_terminal


@dataclass(frozen=True, slots=True)
class Result:
    """What `check_result` hands back: the last state seen and what was done about it.

    Attributes:
        state: The last observed state (terminal unless the call did not wait).
        downloaded_paths: Files written (or found already complete) for the outputs, in order.
        extracted_paths: Files extracted from archive outputs, when extraction was asked.
        sha256: Hex digest of each downloaded file, parallel to `downloaded_paths` (or to
            `destinations`).
        polls: How many status requests this call made.
        submitted_at: When the job was submitted, if this client submitted it.
        finished_at: When the job was first seen terminal.
        noticed_at: Same as `finished_at` for polling; kept apart for push transports.
        key: The batch key of the spec the job came from (`run` only).
        error: Why the batch gave up on the job (a deadline, a failed download…), if it did.
        destinations: The URLs the outputs were delivered to, in order, when the download
            directory was an fsspec URL (``s3://…``); `downloaded_paths` is then empty.
    """

    state: JobState
    downloaded_paths: tuple[Path, ...] = ()
    extracted_paths: tuple[Path, ...] = ()
    sha256: tuple[str, ...] = ()
    polls: int = 0
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    noticed_at: datetime | None = None
    key: str | None = None
    error: BaseException | None = field(default=None, compare=False)
    destinations: tuple[str, ...] = ()

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.state.job_id

    @property
    def status(self) -> Status:
        """The job's last status."""
        return self.state.status

    @property
    def ok(self) -> bool:
        """True when the job completed and nothing went wrong after (its files are saved)."""
        return self.state.status is Status.COMPLETE and self.error is None

    def raise_for_status(self) -> Result:
        """Raise when the job did not complete; return self otherwise, for chaining.

        Raises:
            JobFailed: The job ended in `Status.ERROR`.
            JobCanceled: The job ended in `Status.CANCELED`.
            PollkitError: The batch gave up on the job (`error`: a deadline, a failed download).
        """
        from pollkit.errors import JobCanceled, JobFailed

        if self.error is not None:
            raise self.error
        if self.state.status is Status.ERROR:
            raise JobFailed(state=self.state)
        if self.state.status is Status.CANCELED:
            raise JobCanceled(state=self.state)
        return self

    def _repr_html_(self) -> str | None:
        """Jupyter's rendering: a status table and the downloaded images, as `pollkit.display`
        registered it (`register_html`); None, so the plain repr shows, before it is loaded."""
        render = _HTML_RENDERERS.get(type(self))
        return render(self) if render is not None else None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a job of a batch (`AsyncClient.run`'s ``on_event``).

    Attributes:
        kind: ``submitted``, ``status`` (a new status), ``progress``, ``download_started``,
            ``download_finished``, ``done`` (finished and handled: `result` is set) or
            ``failed`` (the batch gave up on it: `error` is set; `result` too).
        key: The spec's batch key.
        job_id: The job, once it has one.
        state: The latest state, when there is one.
        result: The final result, for ``done`` and ``failed``.
        error: What went wrong, for ``failed``.
        path: The file, for the download events.
    """

    kind: str
    key: str
    job_id: str | None = None
    state: JobState | None = None
    result: Result | None = None
    error: BaseException | None = None
    path: Path | None = None
