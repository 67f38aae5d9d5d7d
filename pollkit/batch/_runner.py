"""`Runner`: one of several processes working one batch through a shared PostgreSQL journal.

Every runner loads the batch's specs (the first adds them, the others find them there), then
claims rows up to its capacity, a bounded number per round, and hands them to its own
`Scheduler` as they come; the scheduler submits, polls and downloads as in a batch of its own.
A job finished or given up is settled, and the runner claims more, until no runner has
anything left: the last ones wait, ready to take over the jobs of a runner that dies.

Its heartbeat runs on the runner's own event loop, so a loop that stalls stops renewing the
lease. When the lease lapses, other runners claim the jobs (bumping each one's fence) and
every later write of this runner to them matches nothing (`ClaimLost`): it drops them, and
yields no Result for them (one Result per spec: the new owner's). A runner never claims back
a row it still works on: once another runner had it, it is lost to this one. A runner that
missed its own lease begins no submit until it has renewed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, cast

from pollkit._aio import wait_event
from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._protocol import Journal
from pollkit.batch.journal._records import canonical_json, spec_key
from pollkit.errors import ConfigurationError, PollkitError, StorageError
from pollkit.models import Event

if TYPE_CHECKING:
    from pollkit.batch._scheduler import BatchItem, Scheduler
    from pollkit.batch.journal._postgres import PostgresJournal

__all__ = ["Runner", "batch_events", "batch_row"]

_log = logging.getLogger("pollkit.runner")


def batch_events(
    scheduler: Scheduler, journal: Journal | None, items: Iterable[BatchItem], *, join: bool
) -> AsyncIterator[Event]:
    """The batch's events: from a `Runner` when the journal is shared, else the scheduler's.

    Raises:
        ConfigurationError: `join` without a shared journal.
    """
    if journal is not None and getattr(journal, "shared", False):
        return Runner(cast("PostgresJournal", journal), join=join).events(scheduler, items)
    if join:
        raise ConfigurationError(
            "join=True follows a batch that runners share: it needs a postgresql:// journal"
        )
    return scheduler.events(items)


def batch_row(item: BatchItem) -> tuple[str, str, str | None]:
    """A batch item as the shared journal loads it: its key, its spec's canonical JSON, and
    its job id when the item is one (an existing job to follow, not a spec to submit).

    Raises:
        ConfigurationError: The item is none of a spec, a job id or ``(key, spec)``.
    """
    if isinstance(item, str):
        return f"job:{item}", canonical_json({"job_id": item}), item
    if isinstance(item, tuple):
        key, spec = item
        return spec_key(spec, key), canonical_json(spec), None
    if isinstance(item, Mapping):
        return spec_key(item), canonical_json(item), None
    raise ConfigurationError(f"a batch item must be a spec, a job id or (key, spec); got {item!r}")


class Runner:
    """Works a shared batch with other runners (see the module).

    Args:
        journal: The shared journal, open; its `heartbeat`, `lease` and `capacity` apply.
        join: Also yield the jobs other runners finish (a ``done`` or ``failed`` event with
            its `Result`, read from the journal), so that this runner's events cover the
            whole batch. Their files are where those runners saved them.
        claim_batch: Most rows one claim takes.
        idle: Seconds between claims while there is nothing to claim.

    Attributes:
        id: This runner's id (host, pid and a random part), as the journal shows it.
        claims: Rows claimed so far.
    """

    def __init__(
        self,
        journal: PostgresJournal,
        *,
        join: bool = False,
        claim_batch: int = 64,
        idle: float = 0.5,
    ):
        self.journal = journal
        self.join = join
        self._followed: set[str] = set()  # keys finished elsewhere, already yielded
        self._since: datetime | None = None
        self.claim_batch = claim_batch
        self.idle = idle
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claims = 0
        self._renewed = float("-inf")  # monotonic start of the last heartbeat that succeeded
        self._renew_now = asyncio.Event()
        self._renewal = asyncio.Event()
        self._freed = asyncio.Event()

    def __repr__(self) -> str:
        return f"Runner({self.id!r}, {self.journal!r})"

    def _lease_valid(self) -> bool:
        # 10 % margin: the server counts the lease from when it ran the heartbeat, a little
        # after the moment recorded here.
        return time.monotonic() - self._renewed < self.journal.lease * 0.9

    async def _lease_held(self) -> None:
        """Wait until this runner's lease is valid (it may have stalled past it)."""
        if self._lease_valid():
            return
        _log.warning("runner %s: its lease lapsed; no submit until it is renewed", self.id)
        while not self._lease_valid():
            self._renewal.clear()
            self._renew_now.set()
            await wait_event(self._renewal, 1.0)

    async def _heartbeats(self) -> None:
        while True:
            await wait_event(self._renew_now, self.journal.heartbeat)
            self._renew_now.clear()
            started = time.monotonic()
            try:
                await claims.heartbeat(self.journal, self.id, self.journal.lease, self.claims)
            except StorageError as exc:
                _log.warning("runner %s: heartbeat failed: %s", self.id, exc)
                continue
            late = started - self._renewed - self.journal.lease
            if late > 0:
                _log.warning(
                    "runner %s: renewed %.1f s after its lease ran out; jobs other runners"
                    " claimed meanwhile are theirs",
                    self.id,
                    late,
                )
            self._renewed = started
            self._renewal.set()

    async def events(
        self, scheduler: Scheduler, items: Iterable[BatchItem]
    ) -> AsyncIterator[Event]:
        """Load `items`, then work the batch with the other runners; yield this runner's
        events (the results of the jobs it finished).

        Raises:
            ConfigurationError: An item is not a spec, a job id or (key, spec), or a key is
                in the journal with another spec.
            StorageError: The journal's server stayed away too long.
        """
        journal = self.journal
        rows = [batch_row(item) for item in items]
        started = time.monotonic()
        await claims.register(journal, self.id, socket.gethostname(), os.getpid(), journal.lease)
        self._renewed = started
        added = await claims.load(journal, scheduler.provider.name, rows)
        _log.info("runner %s: %d of %d specs new to the journal", self.id, added, len(rows))
        again = await claims.reopen(
            journal, [key for key, _, _ in rows], ambiguous=scheduler.resubmit_ambiguous
        )
        if again:
            _log.info("runner %s: %d jobs that did not end done are open again", self.id, again)
        journal.fences = {}
        journal.before_submit = self._lease_held
        scheduler.on_drop = self._dropped
        beat = asyncio.ensure_future(self._heartbeats())
        try:
            async for event in scheduler.events(self._claimed(scheduler)):
                if event.kind in ("done", "failed"):
                    if not await self._settle(scheduler, event):
                        continue  # another runner owns the job now: its Result is theirs
                    self._followed.add(event.key)  # one Result per spec, also when joining
                yield event
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            with suppress(StorageError):
                await claims.stop(journal, self.id, self.claims)
            journal.fences = None
            journal.before_submit = None
            journal.fresh.clear()

    def _dropped(self, key: str) -> None:
        """The scheduler dropped a job another runner claimed: this one holds it no more."""
        fences = self.journal.fences
        if fences is not None:
            fences.pop(key, None)
        self._freed.set()

    async def _settle(self, scheduler: Scheduler, event: Event) -> bool:
        """Mark a job this runner finished as settled; False when another runner owns it.

        A done job was settled with its last write; a failed one is settled here, with the
        fence still held meanwhile (so that no claim of this runner takes the row back from
        under its own settle).
        """
        fences = self.journal.fences
        assert fences is not None
        # The scheduler is done with the key: claimed again one day (a rerun reopened it, or
        # its new owner died), it is new work.
        scheduler._keys.discard(event.key)
        fence = fences.get(event.key)
        if fence is None:
            self._freed.set()  # room for another claim (the last write let go of the row)
            # Settled by its last write (done), or finished by another runner (joining);
            # else a job this runner no longer holds.
            if event.kind == "done" or event.key in self._followed:
                return True
        else:
            # Why it failed goes with the settle (same statement), typed, for a cluster's driver.
            error = None if event.error is None else f"{type(event.error).__name__}: {event.error}"
            try:
                if await claims.settle(self.journal, event.key, fence, error):
                    return True
            finally:
                fences.pop(event.key, None)
                self._freed.set()
        self.journal.refused_writes += 1
        _log.warning(
            "runner %s: %s was claimed by another runner; its result is left to it",
            self.id,
            event.key,
        )
        return False

    async def _follow(self, scheduler: Scheduler) -> None:
        """Hand the scheduler, as events, the jobs other runners finished since last time."""
        finished, self._since = await claims.finished_since(self.journal, self.id, self._since)
        for entry, owner in finished:
            if entry.key in self._followed:
                continue
            self._followed.add(entry.key)
            if entry.state == "done":
                scheduler._replay(entry)
                continue
            why = entry.error or f"left {entry.state} (its submit may have created a job)"
            scheduler._fail_unsubmitted(
                entry.key, PollkitError(f"finished by runner {owner}: {why}"), code=entry.state
            )

    async def _claimed(self, scheduler: Scheduler) -> AsyncIterable[BatchItem]:
        fences = self.journal.fences
        assert fences is not None
        while True:
            room = self.journal.capacity - len(fences)
            got: list[claims.Claimed] = []
            if room > 0 and self._lease_valid():
                got = await claims.claim(
                    self.journal, self.id, min(room, self.claim_batch), list(fences)
                )
            for row in got:
                # Never a row this runner holds (`claims.claim` leaves those out).
                fences[row.key] = row.fence
                if row.state == "pending":
                    self.journal.fresh.add(row.key)
                if row.state == "ambiguous":
                    _log.info("runner %s: claimed %s with its submit in doubt", self.id, row.key)
            self.claims += len(got)
            for row in got:
                yield (row.key, row.spec)
            if got:
                continue
            if self.join:
                await self._follow(scheduler)
            if not fences and await claims.unsettled(self.journal) == 0:
                if self.join:
                    await self._follow(scheduler)  # those finished since the last look
                return  # every job of the batch is finished, by one runner or another
            self._freed.clear()
            await wait_event(self._freed, self.idle)
