"""Progress sinks. The library reports progress only to a sink it is given; by default there is
none. `TqdmProgress` draws bars (``tqdm.auto``, so notebooks get widgets).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from pollkit.models import Status

__all__ = ["NullProgress", "ProgressSink", "TqdmProgress"]


class ProgressSink(Protocol):
    """Receives progress; every method must be cheap and must not raise."""

    def add_jobs(self, count: int) -> None:
        """`count` more jobs are tracked."""

    def job_status(self, job_id: str, status: Status) -> None:
        """A job's status is now `status` (reported on every change)."""

    def add_bytes_total(self, count: int) -> None:
        """`count` more bytes are expected."""

    def advance_bytes(self, count: int) -> None:
        """`count` more bytes were written (negative when a restart threw bytes away)."""

    def file_progress(self, name: str, done: int, total: int | None) -> None:
        """File `name` holds `done` of `total` bytes (reported in batches, and at its end)."""

    def close(self) -> None:
        """No more progress will come."""


class NullProgress:
    """A sink that ignores everything."""

    def add_jobs(self, count: int) -> None:
        """Ignore."""

    def job_status(self, job_id: str, status: Status) -> None:
        """Ignore."""

    def add_bytes_total(self, count: int) -> None:
        """Ignore."""

    def advance_bytes(self, count: int) -> None:
        """Ignore."""

    def file_progress(self, name: str, done: int, total: int | None) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


class TqdmProgress:
    """Bars: jobs finished (with counts per status), total bytes, and one per file in flight.

    Args:
        jobs: Whether to draw the jobs bar (a single `check_result` only needs bytes).
        files: Whether to draw a bar per file while it downloads.
        **tqdm_kwargs: Passed to every bar (e.g. ``file=``, ``disable=``).
    """

    def __init__(self, *, jobs: bool = True, files: bool = True, **tqdm_kwargs: Any) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._kwargs = tqdm_kwargs
        self._files: dict[str, Any] | None = {} if files else None
        self._statuses: dict[str, Status] = {}
        self._jobs = (
            tqdm(total=0, desc="jobs", unit="job", position=0, **tqdm_kwargs) if jobs else None
        )
        self._bytes = tqdm(
            total=0,
            desc="download",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            position=1 if jobs else 0,
            **tqdm_kwargs,
        )

    def add_jobs(self, count: int) -> None:
        """Grow the jobs bar's total."""
        if self._jobs is not None:
            self._jobs.total = (self._jobs.total or 0) + count
            self._jobs.refresh()

    def job_status(self, job_id: str, status: Status) -> None:
        """Count the job as finished when terminal; show counts per status."""
        previous = self._statuses.get(job_id)
        if previous is status:
            return
        self._statuses[job_id] = status
        if self._jobs is None:
            return
        if status.is_terminal and (previous is None or not previous.is_terminal):
            self._jobs.update(1)
        counts = Counter(s.value for s in self._statuses.values())
        self._jobs.set_postfix(dict(sorted(counts.items())), refresh=True)

    def add_bytes_total(self, count: int) -> None:
        """Grow the bytes bar's total."""
        self._bytes.total = (self._bytes.total or 0) + count
        self._bytes.refresh()

    def advance_bytes(self, count: int) -> None:
        """Advance the bytes bar (tqdm itself rate-limits the redraws)."""
        self._bytes.update(count)

    def file_progress(self, name: str, done: int, total: int | None) -> None:
        """Draw (or advance) the file's own bar; it disappears when the file is complete."""
        if self._files is None:
            return
        bar = self._files.get(name)
        if bar is None:
            bar = self._tqdm(
                total=total,
                desc=name[-30:],
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                **self._kwargs,
            )
            self._files[name] = bar
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            del self._files[name]

    def close(self) -> None:
        """Close the bars."""
        for bar in (self._files or {}).values():
            bar.close()
        if self._jobs is not None:
            self._jobs.close()
        self._bytes.close()
