"""`ThreadedJournal`: the async `Journal` over a blocking store, with one priority write lane.

SQLite's calls block on the disk, so they run in one thread of their own, one at a time, in
the order they were asked, except that a job id just received (`record_submitted`) overtakes
the calls waiting: until it is written, a crash leaves its entry ``submitting`` and a rerun
cannot tell that the job exists. Behind a queue of other writes (a disk flush each) it would
wait tens of milliseconds, and a SIGKILL of a busy batch would leave a dozen created jobs
looking unsent, to be paid for twice.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from pollkit.batch.journal._records import JournalEntry
from pollkit.batch.journal._sqlite import SQLiteJournal

__all__ = ["ThreadedJournal"]

_T = TypeVar("_T")


class ThreadedJournal:
    """The `Journal` protocol over `store`, its calls run in one thread, urgent ones first.

    Args:
        store: The blocking journal.
        close_store: Close `store` on `aclose` (it was opened for this batch).
    """

    def __init__(self, store: SQLiteJournal, *, close_store: bool) -> None:
        self.store = store
        self._close_store = close_store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pollkit-journal")
        # Calls waiting for the thread: (0 urgent / 1 not, order of asking, their turn).
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._busy = False

    def __repr__(self) -> str:
        return f"ThreadedJournal({self.store!r})"

    async def _call(self, func: Callable[..., _T], *args: Any, urgent: bool = False) -> _T:
        loop = asyncio.get_running_loop()
        if self._busy:
            turn: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass()  # the turn was given to us: hand it on
                raise
        else:
            self._busy = True
        try:
            return await loop.run_in_executor(self._thread, func, *args)
        finally:
            self._pass()

    def _pass(self) -> None:
        while self._waiting:
            turn = heapq.heappop(self._waiting)[2]
            if not turn.done():  # done: its caller was cancelled while waiting
                turn.set_result(None)
                return
        self._busy = False

    async def get(self, key: str) -> JournalEntry | None:
        """See `SQLiteJournal.get`."""
        return await self._call(self.store.get, key)

    async def entries(self, states: Collection[str] | None = None) -> list[JournalEntry]:
        """See `SQLiteJournal.entries`."""
        return await self._call(self.store.entries, states)

    async def counts(self) -> dict[str, int]:
        """See `SQLiteJournal.counts`."""
        return await self._call(self.store.counts)

    async def begin_submit(self, key: str, provider: str, spec: Mapping[str, Any]) -> JournalEntry:
        """See `SQLiteJournal.begin_submit`."""
        return await self._call(self.store.begin_submit, key, provider, spec)

    async def record_submitted(
        self, key: str, job_id: str, kind: str | None, submitted_at: datetime
    ) -> None:
        """See `SQLiteJournal.record_submitted`; overtakes the calls waiting."""
        await self._call(self.store.record_submitted, key, job_id, kind, submitted_at, urgent=True)

    async def record_submit_failed(self, key: str, error: str) -> None:
        """See `SQLiteJournal.record_submit_failed`."""
        await self._call(self.store.record_submit_failed, key, error)

    async def retry_submit(self, key: str) -> JournalEntry:
        """See `SQLiteJournal.retry_submit`."""
        return await self._call(self.store.retry_submit, key)

    async def mark_ambiguous(self, key: str) -> None:
        """See `SQLiteJournal.mark_ambiguous`."""
        await self._call(self.store.mark_ambiguous, key)

    async def record_status(
        self,
        key: str,
        status: str,
        native_status: str,
        observed_at: datetime,
        error: str | None = None,
    ) -> None:
        """See `SQLiteJournal.record_status`."""
        await self._call(self.store.record_status, key, status, native_status, observed_at, error)

    async def record_output(self, key: str, index: int, path: str, size: int, sha256: str) -> None:
        """See `SQLiteJournal.record_output`."""
        await self._call(self.store.record_output, key, index, path, size, sha256)

    async def record_done(self, key: str) -> None:
        """See `SQLiteJournal.record_done`."""
        await self._call(self.store.record_done, key)

    async def aclose(self) -> None:
        """Let the calls under way finish, stop the thread, and close the store if owned."""
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown, True)
        if self._close_store:
            self.store.close()
