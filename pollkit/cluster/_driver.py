"""The driver of a batch on a Dask cluster: `run_on_cluster` and its blocking twin.

The driver loads the batch into the PostgreSQL journal (idempotent), registers the batch's
`RunnerPlugin` and places one runner task on every worker, then follows the journal: every
job a runner settles comes back as a `Result`, read from its row as a driver that joins a
shared batch reads it (`AsyncClient.run(..., join=True)`), and one progress bar counts the
whole batch. While it follows, it keeps a runner task on every worker, so a worker that joins
(one its nanny restarted, or one added to the cluster) gets one.

The runner tasks are published in the scheduler as a dataset named after the batch: they
outlive the driver. A driver stopped (Ctrl-C, a crash) leaves them at work; started again, it
finds the plugin and the dataset, submits nothing new to Dask for the workers that have a
runner, and yields every job of the batch, the ones finished while it was away included. No
job is repeated: the journal says what is done. When the batch is finished, the driver lets
the runners end, then removes the dataset and the plugin.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack, suppress
from datetime import datetime, timedelta
from typing import Any

from distributed import Client, Future

from pollkit._loopthread import LoopThread
from pollkit.batch._runner import batch_row
from pollkit.batch._scheduler import BatchItem
from pollkit.batch._settled import result_of
from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._open import postgres_journal
from pollkit.batch.journal._pg_schema import WITH_OUTPUTS, entry_of, is_postgres_url, redact_dsn
from pollkit.batch.journal._records import JournalEntry
from pollkit.cluster._connect import DaskTarget, connect
from pollkit.cluster._plugin import RunnerPlugin, RunnerSettings, work_batch
from pollkit.display._progress import NullProgress, ProgressSink, TqdmProgress
from pollkit.download._destination import is_url
from pollkit.errors import (
    ConfigurationError,
)
from pollkit.models import Result
from pollkit.policies import Cadence, DownloadPolicy, RetryPolicy
from pollkit.providers.base import Provider

__all__ = ["run_on_cluster", "run_on_cluster_sync"]

_log = logging.getLogger("pollkit.cluster")


def _absolute(directory: str | os.PathLike[str]) -> str:
    """A URL as it is, a path made absolute: the workers' working directories are not ours."""
    where = os.fspath(directory)
    return where if is_url(where) else os.path.abspath(where)


def batch_name(settings: RunnerSettings) -> str:
    """The name of a batch in Dask (its plugin, its dataset of runner tasks): from where it
    is journaled and where its outputs go, never from a secret."""
    where = "\n".join(
        (
            redact_dsn(settings.journal),
            settings.provider.name,
            str(settings.provider.base_url),
            settings.download_directory,
        )
    )
    return f"pollkit-batch-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


class _Runners:
    """The batch's runner tasks, one per worker, kept in a dataset of the scheduler."""

    def __init__(self, dask: Client, name: str) -> None:
        self.dask = dask
        self.name = name
        self.tasks: dict[str, Future] = {}
        self.submitted = 0

    async def attach(self) -> None:
        found = await self.dask.get_dataset(self.name, default=None)
        if isinstance(found, dict):
            self.tasks = dict(found)
            _log.info("batch %s: found %d runner tasks at work", self.name, len(found))

    async def place(self) -> None:
        """A runner task on every worker that has none at work (new, or ended)."""
        workers = (await self.dask.scheduler.identity())["workers"]
        placed = 0
        for address in sorted(workers):
            task = self.tasks.get(address)
            if task is not None and not task.done():
                continue
            if task is not None and task.status == "error":
                with suppress(Exception):
                    _log.warning("runner on %s ended: %r", address, await task.exception())
            self.tasks[address] = self.dask.submit(
                work_batch,
                self.name,
                key=f"{self.name}-runner-{uuid.uuid4().hex[:8]}",
                pure=False,
                workers=[address],
                # Placed again elsewhere when its worker dies; it then waits for the runner
                # already there, adding none (RunnerPlugin.work).
                allow_other_workers=True,
            )
            placed += 1
        if placed:
            self.submitted += placed
            await self.dask.publish_dataset(self.tasks, name=self.name, override=True)
            _log.info("batch %s: placed %d runner tasks", self.name, placed)

    async def finish(self, wait: float) -> list[dict[str, Any]]:
        """Let the runners end (the batch is finished), then forget them in Dask."""
        tasks = list(self.tasks.values())
        counters: list[dict[str, Any]] = []
        with suppress(Exception):
            done, _ = await asyncio.wait(
                [asyncio.ensure_future(t.result()) for t in tasks], timeout=wait
            )
            counters = [d.result() for d in done if d.exception() is None]
        with suppress(Exception):
            await self.dask.unpublish_dataset(self.name)
        with suppress(Exception):
            await self.dask.unregister_worker_plugin(self.name)
        return counters


async def run_on_cluster(
    dask: DaskTarget,
    items: Iterable[BatchItem],
    *,
    provider: Provider,
    journal: str,
    download_directory: str | os.PathLike[str],
    concurrency: int = 16,
    rate: float | None = None,
    timeout: float | None = None,
    resubmit_ambiguous: bool = False,
    cadence: Cadence | None = None,
    retry: RetryPolicy | None = None,
    download: DownloadPolicy | None = None,
    heartbeat: float = 10.0,
    lease: float = 30.0,
    capacity: int = 256,
    progress: bool | ProgressSink = False,
    follow_every: float = 0.5,
) -> AsyncGenerator[Result, None]:
    """Run a batch on a Dask cluster: one runner per worker, PostgreSQL the one truth; yield
    every job's `Result` as any runner finishes it.

    ``async for result in run_on_cluster("tcp://host:8786", specs, provider=…,
    journal="postgresql://…", download_directory="s3://bucket/run/")``. Stopped and started
    again, it re-attaches to the runners at work and yields every job of the batch; nothing
    is submitted twice (see the module).

    Args:
        dask: A scheduler's address, ``local:N`` (a `LocalCluster` of N workers, closed
            after the batch), or a `distributed.Client`.
        items: Specs, or ``(key, spec)`` pairs (as `AsyncClient.run` takes them).
        provider: The API; its key reaches the workers inside the plugin, never in a log.
        journal: A ``postgresql://`` URL every worker can reach.
        download_directory: Where the workers put outputs: an fsspec URL (``s3://…``) for a
            real cluster, or a folder path (each worker's own disk: right for ``local:N``).
        concurrency: Submits and polls in flight at once, per runner.
        rate: Most submits per second, per runner.
        timeout: Deadline of each job, in seconds from its submission.
        resubmit_ambiguous: Submit again jobs whose submit may have created a job.
        cadence: Polling policy of the runners.
        retry: Retry policy of the runners.
        download: Download policy (spool folder, storage options of the store).
        heartbeat: Seconds between a runner's heartbeats.
        lease: Seconds without a heartbeat before a runner's jobs go to the others.
        capacity: Most unfinished jobs a runner holds.
        progress: True for one tqdm bar of the whole batch, or a sink.
        follow_every: Seconds between two reads of the journal for finished jobs.

    Raises:
        ConfigurationError: `journal` is not a ``postgresql://`` URL, the ``dask`` or
            ``postgres`` extra is missing, an item is bad, or Dask cannot be reached.
        StorageError: The journal's server cannot be reached.
    """
    if not is_postgres_url(journal):
        shown = redact_dsn(journal) if isinstance(journal, str) else type(journal).__name__
        raise ConfigurationError(
            "run_on_cluster: the runners share the batch through a postgresql:// journal;"
            f" got {shown!r}"
        )
    where = _absolute(download_directory)
    settings = RunnerSettings(
        provider=provider,
        journal=journal,
        download_directory=where,
        heartbeat=heartbeat,
        lease=lease,
        capacity=capacity,
        concurrency=concurrency,
        rate=rate,
        timeout=timeout,
        resubmit_ambiguous=resubmit_ambiguous,
        cadence=cadence,
        retry=retry,
        download=download,
    )
    rows = [batch_row(item) for item in items]
    keys = {key for key, _, _ in rows}
    sink: ProgressSink
    # One bar of jobs for the whole batch, and one of the bytes its runners delivered.
    sink = TqdmProgress(jobs=True, files=False) if progress is True else progress or NullProgress()
    name = batch_name(settings)
    async with AsyncExitStack() as stack:
        book = await stack.enter_async_context(postgres_journal(journal, max_connections=2))
        added = await claims.load(book, provider.name, rows)
        again = await claims.reopen(book, sorted(keys), ambiguous=resubmit_ambiguous)
        _log.info("batch %s: %d of %d specs new, %d reopened", name, added, len(rows), again)
        sink.add_jobs(len(keys))
        try:
            async for entry, result in _follow(
                stack, dask, book, settings, name, keys, follow_every
            ):
                # The bars count the whole cluster: jobs finished, bytes delivered.
                delivered = sum(o.size for o in entry.outputs)
                sink.add_bytes_total(delivered)
                sink.advance_bytes(delivered)
                sink.job_status(entry.key, result.status)
                yield result
        finally:
            if progress is True:
                sink.close()


async def _follow(
    stack: AsyncExitStack,
    dask: DaskTarget,
    book: Any,
    settings: RunnerSettings,
    name: str,
    keys: set[str],
    every: float,
) -> AsyncIterator[tuple[JournalEntry, Result]]:
    seen: set[str] = set()
    since: datetime | None = None
    recent: dict[str, datetime] = {}  # keys read in the window the next read looks back on
    runners: _Runners | None = None
    placed_at = float("-inf")
    while True:
        finished, since = await _finished(book, since, recent)
        for entry in finished:
            if entry.key in keys and entry.key not in seen:
                seen.add(entry.key)
                yield entry, result_of(entry)
        if len(seen) >= len(keys):
            break
        if runners is None:
            client = await stack.enter_async_context(connect(dask))
            await client.register_plugin(RunnerPlugin(settings, name), name=name)
            runners = _Runners(client, name)
            await runners.attach()
        if time.monotonic() - placed_at >= max(2.0, every) and await claims.unsettled(book):
            await runners.place()
            placed_at = time.monotonic()
        await asyncio.sleep(every)
    if runners is not None:
        counters = await runners.finish(wait=settings.lease + 10)
        _log.info(
            "batch %s: finished; %d runner tasks placed by this driver, runners: %s",
            name,
            runners.submitted,
            counters,
        )


#: How far back each read of finished jobs looks: a settle committed a little after a later
#: one (its statement began earlier) must not be missed.
_LOOK_BACK = timedelta(seconds=5)


async def _finished(
    book: Any, since: datetime | None, recent: dict[str, datetime]
) -> tuple[list[JournalEntry], datetime]:
    """The jobs settled since `since` (minus the look-back), but for the `recent` ones already
    read, and the server's time now; `recent` is updated. Without the exclusion, every row
    would be read and decoded again at each read during its look-back window."""
    rows = await book.execute(
        "follow the batch",
        f"SELECT {WITH_OUTPUTS}, j.settled_at, now() FROM pollkit_jobs j WHERE j.settled"
        " AND (%s::timestamptz IS NULL OR j.settled_at > %s::timestamptz - %s::interval)"
        " AND NOT j.spec_key = ANY(%s) ORDER BY j.settled_at",
        (since, since, _LOOK_BACK, list(recent)),
    )
    if not rows:
        now = await book.execute("follow the batch", "SELECT now()")
        return [], now[0][0]
    now = rows[-1][15]
    for row in rows:
        recent[row[0]] = row[14]
    horizon = now - 2 * _LOOK_BACK
    for key in [k for k, moment in recent.items() if moment < horizon]:
        del recent[key]
    return [entry_of(row[:14]) for row in rows], now


def run_on_cluster_sync(
    dask: DaskTarget, items: Iterable[BatchItem], **kwargs: Any
) -> Iterator[Result]:
    """`run_on_cluster` for blocking code (a loop of its own in a thread): ``for result in
    run_on_cluster_sync(address, specs, provider=…, journal=…, download_directory=…)``.

    Args:
        dask: A scheduler's address or ``local:N`` (a blocking `distributed.Client` lends
            its address).
        items: The batch's specs.
        kwargs: `run_on_cluster`'s keyword arguments.

    Raises:
        ConfigurationError: As `run_on_cluster`.
    """
    if isinstance(dask, Client):
        dask = dask.scheduler.address
    loop = LoopThread("pollkit-cluster-driver", owner="run_on_cluster_sync")
    try:
        yield from loop.iterate(run_on_cluster(dask, items, **kwargs))
    finally:
        loop.stop()
