"""`Journal`: what the scheduler asks of a batch's durable record, whatever holds it.

Every method is a coroutine, so a backend may be a database driver's own async API (a
PostgreSQL journal shared by runners) or, like SQLite, blocking calls run in a thread of their
own (`ThreadedJournal`). The scheduler knows nothing else of the journal: a second backend
implements this protocol and nothing in the scheduler changes.

The rules every backend keeps (the life of an entry is drawn in
`pollkit.batch.journal._records`): a method returns once its write is durable, so that the
entry saying "about to submit" exists before the request leaves; a transition the life does not
allow raises `ConfigurationError` instead of losing a job id; a key the journal does not know
raises `KeyError`; a refusal of the store itself raises `StorageError`. A journal shared by
runners also raises `ClaimLost` for a write to a job that another runner has claimed since.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pollkit.batch.journal._records import JournalEntry
from pollkit.errors import PollkitError

__all__ = ["ClaimLost", "Journal"]


class ClaimLost(PollkitError):
    """A runner's write was refused: another runner claimed the job since (its fence moved).

    The runner drops the job and leaves it to its new owner; nothing was written.

    Attributes:
        key: The spec's key.
        tracked: The job was being polled (its write was a status, output or done).
    """

    def __init__(self, *, key: str, action: str, tracked: bool, reason: str) -> None:
        super().__init__(f"journal: cannot {action} key {key!r}: this runner lost it ({reason})")
        self.key = key
        self.tracked = tracked


@runtime_checkable
class Journal(Protocol):
    """A batch's durable record, as the scheduler uses it (see the module's rules)."""

    async def get(self, key: str) -> JournalEntry | None:
        """The entry for `key`, or None."""
        ...

    async def entries(self, states: Collection[str] | None = None) -> list[JournalEntry]:
        """Every entry (or those in `states`), in the order they were first written."""
        ...

    async def counts(self) -> dict[str, int]:
        """How many entries are in each state (every state present, zero included)."""
        ...

    async def begin_submit(self, key: str, provider: str, spec: Mapping[str, Any]) -> JournalEntry:
        """Record that `spec` is about to be submitted (a new entry, ``submitting``), or
        return the existing entry unchanged. Durable before it returns."""
        ...

    async def record_submitted(
        self, key: str, job_id: str, kind: str | None, submitted_at: datetime
    ) -> None:
        """Record the job the API created for this spec (``submitted``)."""
        ...

    async def record_submit_failed(self, key: str, error: str) -> None:
        """Record that the server refused the submit: nothing was created (``rejected``)."""
        ...

    async def retry_submit(self, key: str) -> JournalEntry:
        """Begin another submit of a ``rejected`` or ``ambiguous`` entry."""
        ...

    async def mark_ambiguous(self, key: str) -> None:
        """Record that a submit's outcome is unknown: the job may exist (``ambiguous``)."""
        ...

    async def record_status(
        self,
        key: str,
        status: str,
        native_status: str,
        observed_at: datetime,
        error: str | None = None,
    ) -> None:
        """Record the job's status as last observed (a terminal one is final)."""
        ...

    async def record_output(self, key: str, index: int, path: str, size: int, sha256: str) -> None:
        """Record a verified output file (the same index again replaces it)."""
        ...

    async def record_done(self, key: str) -> None:
        """Record that nothing is left to do for this spec (``done``)."""
        ...

    async def aclose(self) -> None:
        """Release what the journal holds (connections, threads); idempotent."""
        ...
