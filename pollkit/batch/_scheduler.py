"""The batch scheduler behind `AsyncClient.run`: thousands of jobs, one heap of next-poll times.

Specs are submitted with bounded concurrency (and an optional rate); every job is tracked in one
heap keyed by when it is next due, not in a sleeping coroutine of its own; a job's outputs are
downloaded as soon as it completes, while others still render. A 429 anywhere pauses every
request of the batch (a shared backoff), and one failed job never stops the others.

With a journal, every spec is written down before its submit request and completed with the job
id after it, so a rerun of the same batch submits nothing twice and downloads nothing twice.

A failed submit is retried only when it created nothing (`SubmitPolicy`, decided by
`pollkit.core.retry.submit_fate`): never sent, or a 429/503. One that may have created its job
(a 500, 502 or 504, a reset after sending, or in flight when a previous run died) is
*ambiguous*: where the API lists jobs by a tag the submit carried (PiXYZ's ``name``), the tag is
looked up; otherwise (Magic Hour has no list endpoint) it is reported as failed with code
``ambiguous_submit`` and submitted again only with ``resubmit_ambiguous=True``. When the batch
stops (a refused key, Ctrl-C, an error), submits on the wire are let finish, up to the
transport's timeout, and their answers recorded: only a submit whose fate stays unknown is left
``submitting`` for the next run to treat as ambiguous.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pollkit._aio import wait_event
from pollkit.batch._learning import BatchLearning
from pollkit.batch._settled import result_of
from pollkit.batch._submits import Submitter
from pollkit.batch.journal._protocol import ClaimLost, Journal
from pollkit.batch.journal._records import JournalEntry, JournalOutput, spec_key
from pollkit.core.cadence import DurationModel, PollHints
from pollkit.core.ratelimit import TokenBucket
from pollkit.core.retry import retry_after_of
from pollkit.display._progress import NullProgress, ProgressSink
from pollkit.download._destination import Destination, is_url
from pollkit.download._downloader import Downloader, Refresh, SavedFile
from pollkit.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    NotFound,
    PollkitError,
    PollTimeout,
    RateLimited,
    TransportError,
)
from pollkit.models import ErrorInfo, Event, JobState, Result, Status
from pollkit.policies import Cadence

if TYPE_CHECKING:  # the client hands its engine in: batch never imports the client
    from pollkit.client._engine import Engine
    from pollkit.push._hub import Notifications  # likewise the push source's hub

__all__ = ["BatchItem", "Scheduler"]

_log = logging.getLogger("pollkit.scheduler")
_T = TypeVar("_T")

BatchItem = Mapping[str, Any] | str | tuple[str, Mapping[str, Any]]
"""A spec, an existing job id, or ``(key, spec)`` with a key of the caller's."""

# A job whose polls keep failing (after the transport's own retries) is given up after this many.
_MAX_POLL_FAILURES = 6


@dataclass(slots=True, eq=False)
class _Job:
    key: str
    job_id: str
    kind: str | None
    since: float  # monotonic: submission in this run, or first sight of an adopted job
    submitted_at: datetime | None
    # Its duration teaches the cadence: submitted in this run, or adopted while still running
    # (timed from first sight, a little short, which only makes the cadence poll sooner).
    fresh: bool
    state: JobState | None = None
    polls: int = 0
    failures: int = 0
    seq: int = -1  # its live heap entry; others are stale (a push re-timed it meanwhile)
    ended: bool = False
    watch: asyncio.Task[None] | None = None  # following its notifications (a push source)
    seen_at: float = 0.0  # its age at the last observation
    # Outputs a previous run (or runner) verified and recorded, still there: not fetched again.
    recorded: tuple[JournalOutput, ...] = ()


@dataclass(slots=True)
class _Counters:
    admitting: int = 0
    tracked: int = 0
    feeding_done: bool = False


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _present(output: JournalOutput) -> bool:
    """Whether an output the journal verified is still there with its size."""
    if is_url(output.path):
        return True  # delivered to a store: recorded only after the put, so trusted
    try:
        return os.stat(output.path).st_size == output.size
    except OSError:
        return False


def _files_present(entry: JournalEntry) -> bool:
    """Whether every output the journal verified is still on disk with its size."""
    return all(_present(output) for output in entry.outputs)


async def _each(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class Scheduler:
    """Runs one batch. Created by `AsyncClient.run`; not reusable."""

    def __init__(
        self,
        engine: Engine,
        downloader: Downloader,
        *,
        cadence: Cadence,
        durations: DurationModel,
        journal: Journal | None,
        directory: Path | Destination,
        concurrency: int,
        rate: float | None,
        download_outputs: bool,
        resubmit_ambiguous: bool,
        on_event: Callable[[Event], None] | None,
        progress: ProgressSink | None,
        refresher: Callable[[str, str | None], Refresh],
        rng: random.Random,
        push: Notifications | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be ≥ 1, got {concurrency}")
        if rate is not None and rate <= 0:
            raise ConfigurationError(f"rate must be > 0 submits per second, got {rate}")
        self.engine = engine
        self.provider = engine.provider
        self.downloader = downloader
        self.cadence = cadence
        self.durations = durations
        self.journal = journal
        self.directory = directory
        self.concurrency = concurrency
        self.download_outputs = download_outputs
        self.resubmit_ambiguous = resubmit_ambiguous
        self.on_event = on_event
        self.progress = progress or NullProgress()
        self.refresher = refresher
        self.rng = rng
        self.push = push
        self._bucket = TokenBucket(rate, burst=1) if rate else None
        # 429s are handled here, for the whole batch, instead of per request.
        base = engine.transport.retry
        self._poll_retry = base.model_copy(update={"statuses": base.statuses - {429}})
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counters = _Counters()
        self._pause_until = 0.0
        self._pause_step = 0
        self._fatal: BaseException | None = None
        self._keys: set[str] = set()
        #: Called with the key of each job dropped because another runner owns it now (set
        #: by a `Runner`, which then stops holding the row).
        self.on_drop: Callable[[str], None] | None = None
        self._submits = Submitter(self, lookup_retry=self._poll_retry)
        # When to poll: the schedule solved from the durations learned (pollkit.core.learning).
        self._learning = BatchLearning(
            self.provider.name,
            cadence,
            durations,
            running=self._running,
            on_schedule=self._relearn,
            spawn=self._spawn,
        )

    # --- plumbing -----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ClaimLost):
            self._drop(error)
            return
        if error is not None and self._fatal is None:
            self._fatal = error
            self._queue.put_nowait(None)

    def _drop(self, lost: ClaimLost) -> None:
        """Another runner owns the job now (a shared journal): it is theirs to finish, and
        this runner may claim it again later."""
        if lost.key not in self._keys:
            return  # dropped already: a second write of the same job was refused too
        _log.warning("dropping a job: %s", lost)
        self._keys.discard(lost.key)
        if lost.tracked:
            self._counters.tracked -= 1
            self._maybe_finished()
        if self.on_drop is not None:
            self.on_drop(lost.key)

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken callback must not stop the batch
                _log.exception("on_event callback failed for %s", event.kind)
        self._queue.put_nowait(event)

    def _maybe_finished(self) -> None:
        c = self._counters
        if c.feeding_done and c.admitting == 0 and c.tracked == 0:
            self._queue.put_nowait(None)

    async def _respect_pause(self) -> None:
        # A loop, not one sleep: another 429 may extend the pause meanwhile.
        while (wait := self._pause_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)

    def _pause_all(self, error: BaseException) -> None:
        """A 429: hold every request of the batch for the server's Retry-After (or a backoff)."""
        hint = retry_after_of(error)
        if hint is None:
            self._pause_step += 1
            hint = min(self.cadence.initial * 2 ** min(self._pause_step, 10), self.cadence.maximum)
        until = time.monotonic() + hint
        if until > self._pause_until:
            _log.info("rate limited: pausing the whole batch for %.2f s", hint)
            self._pause_until = until

    # --- the run --------------------------------------------------------------------------

    async def events(
        self, items: Iterable[BatchItem] | AsyncIterable[BatchItem]
    ) -> AsyncIterator[Event]:
        """Run the batch; yield every event, ending when every item is done or failed.

        `items` may arrive over time (an async iterable: the jobs a runner claims)."""
        if self.journal is not None:
            stale = await self.journal.entries({"submitting"})
            for entry in stale:
                await self.journal.mark_ambiguous(entry.key)
            if stale:
                _log.warning("%d submits were in flight when the last run stopped", len(stale))
        self._spawn(self._feed(items))
        self._spawn(self._poll_loop())
        try:
            while True:
                event = await self._queue.get()
                if event is None:
                    break
                yield event
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._submits.stopping = True
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._submits.drain()

    async def _feed(self, items: Iterable[BatchItem] | AsyncIterable[BatchItem]) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        async for item in _each(items):
            await slots.acquire()
            self._counters.admitting += 1

            def release(_: asyncio.Task[Any]) -> None:
                slots.release()
                self._counters.admitting -= 1
                self._maybe_finished()

            self._spawn(self._admit(item)).add_done_callback(release)
        self._counters.feeding_done = True
        self._maybe_finished()

    def _key_and_spec(self, item: BatchItem) -> tuple[str, Mapping[str, Any] | None, str | None]:
        """(key, spec to submit or None, existing job id or None)."""
        if isinstance(item, str):
            return f"job:{item}", None, item
        if isinstance(item, tuple):
            key, spec = item
            return spec_key(spec, key), spec, None
        if isinstance(item, Mapping):
            return spec_key(item), item, None
        raise ConfigurationError(
            f"a batch item must be a spec, a job id or (key, spec); got {item!r}"
        )

    async def _admit(self, item: BatchItem) -> None:
        try:
            key, spec, job_id = self._key_and_spec(item)
        except ConfigurationError as exc:
            self._fail_unsubmitted(f"item:{id(item)}", exc)
            return
        if key in self._keys:
            duplicate = ConfigurationError(
                f"spec {key} appears twice in the batch; give each its own key to submit both"
            )
            self._fail_unsubmitted(key, duplicate, code="duplicate")
            return
        self._keys.add(key)
        if job_id is not None:
            await self._adopt(key, job_id)
            return
        assert spec is not None
        again = False
        if self.journal is not None:
            entry = await self.journal.get(key)
            if entry is not None:
                if entry.spec != dict(spec) or entry.provider != self.provider.name:
                    reused = ConfigurationError(f"key {key} was used for another spec before")
                    self._fail_unsubmitted(key, reused)
                    return
                if entry.state == "done" and entry.job_id and _files_present(entry):
                    self._replay(entry)
                    return
                if entry.state in ("submitted", "done") and entry.job_id:
                    # Polled at once (a rerun, or a job reclaimed from a runner that died);
                    # the outputs already recorded, and still there, are not fetched again.
                    recorded = tuple(o for o in entry.outputs if _present(o))
                    self._track(
                        key,
                        entry.job_id,
                        entry.kind,
                        entry.submitted_at,
                        fresh=False,
                        due=0.0,
                        recorded=recorded,
                    )
                    return
                if entry.state == "ambiguous":
                    why = "it was in flight when an earlier run stopped"
                    if self._submits.tag(key, spec) is not None:
                        await self._submits.resolve(key, spec, why)
                        return
                    if not self.resubmit_ambiguous:
                        self._submits.fail_ambiguous(key, why)
                        return
                again = True  # ambiguous (and told to) or rejected: send it again
        await self._submits.submit(key, spec, again=again)

    async def _adopt(self, key: str, job_id: str) -> None:
        """Track a job that exists already (wait and download only)."""
        if self.journal is not None:
            entry = await self.journal.begin_submit(key, self.provider.name, {"job_id": job_id})
            if entry.state in ("submitting", "ambiguous"):
                await self.journal.record_submitted(key, job_id, None, _now())
        self._track(key, job_id, None, None, fresh=False, due=0.0)

    def _replay(self, entry: JournalEntry) -> None:
        """A job the journal says is finished, with its files on disk: no request at all."""
        result = result_of(entry)
        self.progress.add_jobs(1)
        self.progress.job_status(entry.key, result.status)
        self._emit(Event("done", entry.key, entry.job_id, state=result.state, result=result))

    def _fail_unsubmitted(self, key: str, error: BaseException, code: str | None = None) -> None:
        state = JobState(
            provider=self.provider.name,
            job_id="",
            status=Status.ERROR,
            native_status=code or "not_submitted",
            observed_at=_now(),
            error=ErrorInfo(code or "not_submitted", str(error)),
        )
        result = Result(state=state, key=key, error=error)
        self.progress.add_jobs(1)
        self.progress.job_status(key, Status.ERROR)
        self._emit(Event("failed", key, None, state=state, result=result, error=error))

    def _first_delay(self, kind: str | None) -> float:
        return self._learning.first_delay(kind, self.rng.random())

    def _track(
        self,
        key: str,
        job_id: str,
        kind: str | None,
        submitted_at: datetime | None,
        *,
        fresh: bool,
        due: float,
        recorded: tuple[JournalOutput, ...] = (),
    ) -> None:
        since = time.monotonic()
        if fresh and submitted_at is not None:
            # Its age counts from the submit's reply, not from now: writing the journal row
            # may have queued behind others, and a late start would make every poll late.
            waited = max((_now() - submitted_at).total_seconds(), 0.0)
            since -= waited
            due = max(due - waited, 0.0)
        job = _Job(key, job_id, kind, since, submitted_at, fresh, recorded=recorded)
        self._counters.tracked += 1
        self.progress.add_jobs(1)
        if self.push is not None:
            job.watch = self._spawn(self._watch(job))
            if fresh and self.push.live:
                # Submitted here while live: its notifications stand in for the first polls.
                due = max(due, self.cadence.push_window)
        self._push(job, due)

    def _push(self, job: _Job, delay: float) -> None:
        job.seq = next(self._seq)
        heapq.heappush(self._heap, (time.monotonic() + delay, job.seq, job))
        self._wake.set()

    async def _watch(self, job: _Job) -> None:
        """Follow one job's notifications (a push source): each one the API confirms (or a
        trusted source's) is observed like a poll's reply, without the poll."""
        assert self.push is not None
        with self.push.subscribe(job.job_id) as subscription:
            while not job.ended:
                pushed = await self.engine.next_pushed(
                    subscription, self.cadence.timeout or 86400.0, job.state, job.kind
                )
                if job.ended:
                    return
                if pushed is None:
                    if not subscription.live:
                        self._push(job, 0.0)  # the source dropped: poll now, then the cadence
                    continue
                state, hints, reads = pushed
                job.polls += reads
                await self._observed(job, state, hints or PollHints(), polled=False)

    # --- polling ---------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        while True:
            if not self._heap:
                await self._wake.wait()
                self._wake.clear()
                continue
            wait = self._heap[0][0] - time.monotonic()
            if wait > 0:
                self._wake.clear()
                await wait_event(self._wake, wait)
                continue
            _, seq, job = heapq.heappop(self._heap)
            if seq != job.seq or job.ended:
                continue  # re-timed since (a notification), or over
            await slots.acquire()
            limit = self.provider.batch_status_limit
            # With a list endpoint, one request also refreshes the jobs due shortly after this
            # one: asking a little early costs nothing, asking separately costs a request each.
            horizon = time.monotonic() + min(self.cadence.initial, 1.0)
            if limit > 1 and self._heap and self._heap[0][0] <= horizon:
                due = [job]
                while self._heap and len(due) < limit and self._heap[0][0] <= horizon:
                    _, seq, other = heapq.heappop(self._heap)
                    if seq == other.seq and not other.ended:
                        due.append(other)
                task = self._spawn(self._poll_many(due))
            else:
                task = self._spawn(self._poll(job))
            task.add_done_callback(lambda _: slots.release())

    async def _poll(self, job: _Job) -> None:
        await self._respect_pause()
        try:
            state, hints = await self.engine.observe(
                job.job_id, job.kind, job.state, retry=self._poll_retry
            )
        except PollkitError as exc:
            await self._poll_failed(job, exc)
            return
        await self._observed(job, state, hints)

    async def _poll_many(self, jobs: list[_Job]) -> None:
        await self._respect_pause()
        try:
            states = await self.engine.observe_many(
                [j.job_id for j in jobs],
                {j.job_id: j.state for j in jobs if j.state is not None},
                retry=self._poll_retry,
            )
        except PollkitError as exc:
            for job in jobs:
                await self._poll_failed(job, exc)
            return
        missing = []
        for job in jobs:
            found = states.get(job.job_id)
            if found is None:
                missing.append(job)
                continue
            try:
                await self._observed(job, found, PollHints())
            except ClaimLost as lost:  # one job lost must not lose the others of the list
                self._drop(lost)
        # Not in the list (another type, beyond the page, deleted): ask about each on its own,
        # now. Pushed back on the heap instead, a job the list never shows would be listed
        # again with the next due jobs, and again, in a loop of list requests.
        await asyncio.gather(*(self._poll(job) for job in missing))

    async def _poll_failed(self, job: _Job, exc: PollkitError) -> None:
        if isinstance(exc, RateLimited):
            self._pause_all(exc)
            self._push(job, 0.0)
        elif isinstance(exc, AuthenticationError):
            raise exc  # the key was refused: the whole batch stops (see run)
        elif isinstance(exc, (NotFound, ConfigurationError)):
            await self._give_up(job, exc)
        elif isinstance(exc, (APIError, TransportError)):
            job.failures += 1
            if job.failures >= _MAX_POLL_FAILURES:
                await self._give_up(job, exc)
            else:
                self._push(job, min(self.cadence.initial * 2**job.failures, self.cadence.maximum))
        else:
            raise exc

    async def _observed(
        self, job: _Job, state: JobState, hints: PollHints, *, polled: bool = True
    ) -> None:
        if job.ended:
            return  # a poll and a notification both told: the first one counted
        if state.is_terminal:
            self._end(job)
        self._pause_step = 0
        job.failures = 0
        job.polls += 1 if polled else 0
        previous, job.state = job.state, state
        if (
            previous is None
            and not job.fresh
            and not state.is_terminal
            and job.submitted_at is None
        ):
            job.fresh = True  # adopted while running: worth learning from
        job.kind = state.kind or job.kind
        if previous is None or previous.status is not state.status:
            self.progress.job_status(job.key, state.status)
            self._emit(Event("status", job.key, job.job_id, state=state))
            if self.journal is not None:
                error = str(state.error) if state.error else None
                await self.journal.record_status(
                    job.key,
                    state.status.value,
                    state.native_status,
                    state.observed_at,
                    error,
                )
        elif state.progress is not None and (previous.progress != state.progress):
            self._emit(Event("progress", job.key, job.job_id, state=state))
        age = time.monotonic() - job.since
        if state.is_terminal:
            if job.fresh:
                # It ended between the last observation and this one (counting the whole
                # wait would teach the cadence its own lag): see `PollSchedule.ended_between`.
                ended = (
                    age
                    if not polled
                    else self._learning.ended_between(job.kind, job.seen_at, age, self.rng.random())
                )
                self._learning.finished(job.kind, job.since, ended)
            self._spawn(self._finish(job, state))
            return
        job.seen_at = age
        delay = self._next_delay(job, age, hints)
        if delay is None:
            timeout = self.cadence.timeout or 0.0
            hint = self.provider.timeout_hint(state)
            expired = PollTimeout(job_id=job.job_id, timeout=timeout, state=state, hint=hint)
            await self._give_up(job, expired)
            return
        self._push(job, delay)

    def _running(self, group: str) -> list[tuple[float, float]]:
        """(submitted, age when last seen running) of the group's running jobs that teach the
        cadence.

        Not their age now: a job not polled since is not known to be running still, and
        counting it as such would say that fewer jobs end young than do (a batch's first
        poll burst, half sent, would look like a thousand jobs that outlived it).
        """
        return [
            (job.since, job.seen_at)
            for _, seq, job in self._heap
            if seq == job.seq and job.fresh and self._learning.group(job.kind) == group
        ]

    def _relearn(self, group: str) -> None:
        """A new schedule for this group: bring its waiting jobs' next polls forward to it.

        Jobs would otherwise sleep past their likely end.
        """
        now = time.monotonic()
        entries = []
        for due, seq, job in self._heap:
            if self._learning.group(job.kind) == group and (job.fresh or job.polls > 0):
                delay = self._next_delay(job, now - job.since, PollHints())
                if delay is not None:
                    # Only ever sooner: a poll already due (a burst the loop is working
                    # through) would otherwise move past its time, and again at each solve.
                    due = min(due, now + delay)
            entries.append((due, seq, job))
        heapq.heapify(entries)
        self._heap = entries
        self._wake.set()

    def _next_delay(self, job: _Job, age: float, hints: PollHints) -> float | None:
        delay = self._learning.next_delay(job.kind, job.polls, age, hints, self.rng.random())
        if delay is not None and self.push is not None and self.push.live:
            # Its notifications stand in for polls: one only after a silent window.
            delay = max(delay, self.cadence.push_window)
            if self.cadence.timeout is not None:
                delay = min(delay, max(self.cadence.timeout - age, 0.0))
        return delay

    # --- the end of a job ------------------------------------------------------------------

    def _end(self, job: _Job) -> None:
        """No more polls or notifications of this job count."""
        job.ended = True
        if job.watch is not None and job.watch is not asyncio.current_task():
            job.watch.cancel()

    async def _give_up(self, job: _Job, error: BaseException) -> None:
        self._end(job)
        state = job.state or JobState(
            provider=self.provider.name,
            job_id=job.job_id,
            status=Status.ERROR,
            native_status="unknown",
            observed_at=_now(),
            error=ErrorInfo("unreachable", str(error)),
        )
        result = Result(
            state=state, polls=job.polls, submitted_at=job.submitted_at, key=job.key, error=error
        )
        self.progress.job_status(job.key, Status.ERROR)
        self._emit(Event("failed", job.key, job.job_id, state=state, result=result, error=error))
        self._counters.tracked -= 1
        self._maybe_finished()

    async def _finish(self, job: _Job, state: JobState) -> None:
        paths: tuple[Path, ...] = ()
        urls: tuple[str, ...] = ()
        extracted: tuple[Path, ...] = ()
        digests: tuple[str, ...] = ()
        error: BaseException | None = None
        if self.download_outputs and state.status is Status.COMPLETE and state.outputs:
            known = {o.index: o for o in job.recorded}
            missing = tuple(o for o in state.outputs if o.index not in known)
            saved: list[SavedFile] = []
            try:
                if missing:
                    self._emit(Event("download_started", job.key, job.job_id, state=state))
                    saved = await self.downloader.fetch_all(
                        replace(state, outputs=missing),
                        self.directory,
                        refresh=self.refresher(job.job_id, job.kind),
                        progress=self.progress,
                        fields=self.provider.name_fields(state),
                    )
            except (DownloadError, APIError, TransportError) as exc:
                error = exc
            else:
                fetched: dict[int, SavedFile] = {}
                for output, file in zip(missing, saved, strict=True):
                    fetched[output.index] = file
                    self._emit(
                        Event(
                            "download_finished",
                            job.key,
                            job.job_id,
                            state=state,
                            path=None if file.destination else file.path,
                        )
                    )
                    if self.journal is not None:
                        await self.journal.record_output(
                            job.key,
                            output.index,
                            file.location,
                            file.size,
                            file.sha256,
                        )
                # In the outputs' order, each from this download or from the journal.
                for output in state.outputs:
                    found = fetched.get(output.index)
                    if found is not None:
                        if found.destination is None:
                            paths += (found.path,)
                        else:
                            urls += (found.destination,)
                        extracted += found.extracted
                        digests += (found.sha256,)
                        continue
                    record = known[output.index]
                    if is_url(record.path):
                        urls += (record.path,)
                    else:
                        paths += (Path(record.path),)
                    digests += (record.sha256,)
        if error is None and self.journal is not None:
            await self.journal.record_done(job.key)
        result = Result(
            state=state,
            downloaded_paths=paths,
            extracted_paths=extracted,
            sha256=digests,
            polls=job.polls,
            submitted_at=job.submitted_at,
            finished_at=state.observed_at,
            noticed_at=state.observed_at,
            key=job.key,
            error=error,
            destinations=urls,
        )
        kind = "failed" if error is not None else "done"
        self._emit(Event(kind, job.key, job.job_id, state=state, result=result, error=error))
        self._counters.tracked -= 1
        self._maybe_finished()
