"""How a Pixy item's fields map onto pollkit's model: the status tables of docs/apis/pixy.md,
progress (with the time left it implies) and outputs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pollkit.core.naming import safe_name, url_basename
from pollkit.models import JobState, Output, Status

__all__ = ["BY_STATUS", "BY_TASK_STATUS", "outputs_of", "progress_of"]

# docs/apis/pixy.md#status-map: `status` when the item has it (images), else `task_status`.
#: Pollkit status of each `status` value.
BY_STATUS = {
    "none": Status.DRAFT,
    "draft": Status.DRAFT,
    "init": Status.QUEUED,
    "queue": Status.QUEUED,
    "waiting": Status.QUEUED,
    "running": Status.RENDERING,
    "processing": Status.RENDERING,
    "done": Status.COMPLETE,
    "completed": Status.COMPLETE,
    "error": Status.ERROR,
    "cancelled": Status.CANCELED,
}
#: Pollkit status of each `task_status` value (items without `status`).
BY_TASK_STATUS = {
    "null": Status.DRAFT,
    "draft": Status.DRAFT,
    "init": Status.QUEUED,
    "processing": Status.RENDERING,
    "paused": Status.QUEUED,
    "completed": Status.COMPLETE,
    "done": Status.COMPLETE,
    "error": Status.ERROR,
}


def progress_of(
    raw: Any, observed_at: datetime, previous: JobState | None
) -> tuple[float | None, float | None]:
    """``task_progress`` (`raw`) as 0–1 (None for −1), never below the last reading, and the
    time left at the rate it rose since then (seconds, or None)."""
    progress: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0:
        progress = min(raw, 100) / 100  # no float(raw): an int may be too large for one
    before = previous.progress if previous is not None else None
    if before is not None and (progress is None or progress < before):
        progress = before
    if previous is None or before is None or progress is None or progress >= 1:
        return progress, None
    elapsed = (observed_at - previous.observed_at).total_seconds()
    if elapsed <= 0:
        return progress, previous.eta_seconds
    if progress > before:
        return progress, (1 - progress) * elapsed / (progress - before)
    if previous.eta_seconds is not None:
        return progress, max(previous.eta_seconds - elapsed, 0.0)
    return progress, None


def outputs_of(item: Mapping[str, Any]) -> tuple[Output, ...]:
    """A complete item's ``results[].url`` as outputs, in order."""
    results = item.get("results")
    if not isinstance(results, list):
        return ()
    outputs: list[Output] = []
    for entry in results:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url:
            continue
        try:
            name = url_basename(url)
        except ValueError:  # not a URL any client can fetch ("http://[x/a.png")
            continue
        outputs.append(Output(url=url, index=len(outputs), name=name if safe_name(name) else None))
    return tuple(outputs)
