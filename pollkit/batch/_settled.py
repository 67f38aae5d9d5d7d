"""A settled journal row read back as the `Result` it stands for: how a rerun answers a job
already done, and how a driver or a joining runner reports a job another runner finished."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pollkit.batch.journal._records import JournalEntry
from pollkit.download._destination import is_url
from pollkit.errors import (
    AmbiguousSubmit,
    ChecksumMismatch,
    DownloadError,
    IncompleteDownload,
    PollkitError,
    StorageError,
    UnsafePath,
    URLExpired,
)
from pollkit.models import ErrorInfo, JobState, Result, Status

__all__ = ["result_of"]

#: Errors a runner records by name with the job it gave up (see `claims.settle`).
_TYPED: dict[str, type[DownloadError]] = {
    cls.__name__: cls
    for cls in (
        DownloadError,
        StorageError,
        ChecksumMismatch,
        IncompleteDownload,
        UnsafePath,
        URLExpired,
    )
}


def _error_of(entry: JournalEntry, provider: str) -> PollkitError:
    """Why a job settled without being done, as the type its runner raised where known."""
    text = entry.error or ""
    name, _, message = text.partition(": ")
    if name in _TYPED:
        return _TYPED[name](message, job_id=entry.job_id, operation=None)
    if entry.state == "ambiguous":
        return AmbiguousSubmit(
            key=entry.key, provider=provider, reason=text or "in flight", can_look_up=False
        )
    return PollkitError(text or f"{entry.key}: left {entry.state}")


def result_of(entry: JournalEntry) -> Result:
    """The `Result` a settled journal row stands for (files where its runner put them)."""
    done = entry.state == "done"
    status = Status(entry.status) if entry.status else (Status.COMPLETE if done else Status.ERROR)
    # A done job's row may keep the error of an earlier, reopened attempt: not its own.
    failed = status is not Status.COMPLETE and entry.error is not None
    state = JobState(
        provider=entry.provider,
        job_id=entry.job_id or "",
        status=status,
        native_status=entry.native_status or (status.value if done else entry.state),
        observed_at=entry.finished_at or datetime.now(timezone.utc),
        error=ErrorInfo(None, entry.error or "") if failed else None,
        kind=entry.kind,
    )
    return Result(
        state=state,
        downloaded_paths=tuple(Path(o.path) for o in entry.outputs if not is_url(o.path)),
        destinations=tuple(o.path for o in entry.outputs if is_url(o.path)),
        sha256=tuple(o.sha256 for o in entry.outputs),
        submitted_at=entry.submitted_at,
        finished_at=entry.finished_at,
        noticed_at=entry.finished_at,
        key=entry.key,
        error=None if done else _error_of(entry, entry.provider),
    )
