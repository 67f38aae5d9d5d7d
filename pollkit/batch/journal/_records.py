"""What a journal records, whatever holds it: one entry per spec, one output per verified file.

These are the values the `Journal` protocol speaks in; the SQLite journal stores them in one
file, a PostgreSQL journal in tables that several runners share.

The life of an entry (``state``)::

    begin_submit ─▶ submitting ──record_submitted──▶ submitted ──record_done──▶ done
                     │      │                            ▲
  record_submit_failed      mark_ambiguous               │ record_submitted
  (a 4xx: no job)    │      │ (outcome unknown)          │ (the job exists after all)
                     ▼      ▼                            │
                 rejected  ambiguous ────────────────────┘
                     │      │
                     └──────┴──retry_submit──▶ submitting (attempts + 1)

Any other transition is a bug in the caller and raises `ConfigurationError` rather than
silently losing a job id. The job's own status (``queued``, ``complete``…) is kept apart from
the entry's state; a terminal status is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pollkit.errors import ConfigurationError

__all__ = [
    "APPLICATION",
    "STATES",
    "JournalEntry",
    "JournalOutput",
    "canonical_json",
    "check_schema_row",
    "check_states",
    "default_journal_path",
    "entry_from_row",
    "spec_key",
]

STATES = ("submitting", "submitted", "rejected", "ambiguous", "done")


#: What `application` holds in a journal's ``pollkit_schema`` row, in either backend.
APPLICATION = "pollkit-journal"


def check_states(states: Iterable[str]) -> tuple[str, ...]:
    """`states` as a tuple, each checked against the journal's `STATES`.

    Raises:
        ConfigurationError: A state is unknown (named).
    """
    wanted = tuple(states)
    unknown = sorted(set(wanted) - set(STATES))
    if unknown:
        raise ConfigurationError(f"journal: unknown states {unknown}; known: {STATES}")
    return wanted


def check_schema_row(row: Sequence[Any] | None, where: str, newest: int) -> None:
    """Check a journal's ``pollkit_schema`` row (application, version) before use.

    Args:
        row: The row read, or None if the table is empty.
        where: The journal, as messages name it (a path, a redacted DSN).
        newest: The newest schema version this pollkit reads.

    Raises:
        ConfigurationError: Not a pollkit journal, or one written by a newer pollkit.
    """
    if row is None or row[0] != APPLICATION or not isinstance(row[1], int) or row[1] < 1:
        raise ConfigurationError(f"{where} is not a pollkit journal (bad schema row)")
    if row[1] > newest:
        raise ConfigurationError(
            f"journal {where} has schema version {row[1]}, written by a newer pollkit;"
            f" this one reads up to version {newest}"
        )
    # Older versions would be migrated here; version 1 is the first.


def default_journal_path(download_directory: str | os.PathLike[str]) -> Path:
    """Where a batch downloading into `download_directory` keeps its journal.

    Args:
        download_directory: The batch's download directory.

    Returns:
        ``<download_directory>/.pollkit/journal.sqlite``.
    """
    return Path(download_directory) / ".pollkit" / "journal.sqlite"


def canonical_json(spec: Mapping[str, Any]) -> str:
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"a spec must be a mapping, got {type(spec).__name__}")
    try:
        # allow_nan=False: NaN is not JSON, and would not survive a PostgreSQL jsonb column.
        return json.dumps(
            spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"spec is not JSON-serialisable: {exc}") from exc


def spec_key(spec: Mapping[str, Any], key: str | None = None) -> str:
    """The journal key of a spec: the user's own key, or a hash of the spec's content.

    The hash is of the canonical JSON (sorted keys, no spaces, UTF-8), so the order of a
    mapping's keys does not change it, and it is the same on every run and machine.

    Args:
        spec: The request body the job is created from.
        key: The user's key for this spec, if they gave one; it wins over the hash.

    Returns:
        `key`, or ``"sha256:<hex digest>"``.

    Raises:
        ConfigurationError: `key` is given but empty or not a string, or the spec cannot be
            written as JSON (an object, NaN, a non-mapping).
    """
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise ConfigurationError(f"a spec key must be a non-empty string, got {key!r}")
        return key
    digest = hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


@dataclass(frozen=True, slots=True)
class JournalOutput:
    """One output file verified on disk.

    Attributes:
        index: Position among the job's outputs (0-based).
        path: Where the file is.
        size: Its size in bytes.
        sha256: Hex digest of its content.
    """

    index: int
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """What the journal knows about one spec.

    Attributes:
        key: The spec's key (`spec_key`).
        provider: The provider the spec is for.
        spec: The spec, decoded from its stored JSON.
        state: ``submitting``, ``submitted``, ``rejected``, ``ambiguous`` or ``done``.
        job_id: The API's job id, once submitted.
        kind: The provider's job kind, when it said.
        status: pollkit's last status of the job (a `Status` value), when polled.
        native_status: The API's own last status string.
        error: The last error: the server's refusal of a submit, or why the job failed.
        attempts: How many times a submit was begun.
        created_at: When the row was first written (UTC).
        submitted_at: When the job was created.
        finished_at: When a terminal status was first recorded.
        outputs: Verified files, ordered by index.
    """

    key: str
    provider: str
    spec: dict[str, Any]
    state: str
    job_id: str | None
    kind: str | None
    status: str | None
    native_status: str | None
    error: str | None
    attempts: int
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    outputs: tuple[JournalOutput, ...] = ()


def entry_from_row(
    row: Sequence[Any],
    outputs: tuple[JournalOutput, ...],
    moment: Callable[[Any], datetime | None],
) -> JournalEntry:
    """A `JournalEntry` from the 13 columns every backend selects, in this order: key,
    provider, spec (JSON text), state, job id, kind, status, native status, error, attempts,
    created, submitted and finished; `moment` reads the backend's time columns."""
    created = moment(row[10])
    assert created is not None  # NOT NULL in every schema
    return JournalEntry(
        key=row[0],
        provider=row[1],
        spec=json.loads(row[2]),
        state=row[3],
        job_id=row[4],
        kind=row[5],
        status=row[6],
        native_status=row[7],
        error=row[8],
        attempts=row[9],
        created_at=created,
        submitted_at=moment(row[11]),
        finished_at=moment(row[12]),
        outputs=outputs,
    )
