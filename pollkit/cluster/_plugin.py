"""What lives on each Dask worker: `RunnerPlugin` and the task that runs its runner.

One `RunnerPlugin` per worker holds the long-lived things of a batch: the pollkit
`AsyncClient` (its HTTP session and connection pool), the `PostgresJournal` (its connection
pool) and the output `Destination` (its fsspec filesystem and spool). Dask sends the plugin to
every worker that joins, a worker its nanny restarted included, and tears it down when the
worker closes.

**Where the runner's event loop is.** Dask runs a task in a thread of the worker's pool; the
worker's own event loop serves Dask (heartbeats to the scheduler, data transfers). The runner
is a long-lived asyncio coroutine with its own heartbeat to PostgreSQL, so it gets a loop of
its own: a daemon thread the plugin starts in `setup` (`pollkit._loopthread.LoopThread`) and
stops in `teardown`. Neither loop can stall the other: a busy runner never delays Dask's
heartbeats (the worker would be declared dead), and a busy worker never delays the runner's
lease. The task (`work_batch`) only waits for the runner from a Dask thread, after
``secede()``: it holds no slot of the worker's thread pool, so other work of the cluster runs
beside it.

**One runner per worker.** The plugin starts the worker's runner as it is set up: when a
worker's nanny restarts it, the scheduler sends the new worker the plugin again, and with it
a runner. Every task of the batch that lands on a worker waits for that worker's one runner
(starting it again if it had ended, for a batch reopened since): a task Dask places again
after its worker died, landing where a runner already runs, adds no second one. The tasks
are the driver's handle on the runners: it collects their counters when the batch ends.

Nothing that matters is in Dask's memory: the runner claims its jobs from PostgreSQL and
records everything there; its task returns only counters. A worker that dies loses its claims
when its lease lapses, and the other runners (or the one on the restarted worker) take them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from distributed import WorkerPlugin, get_worker, secede

from pollkit._loopthread import LoopThread
from pollkit.batch.journal._open import postgres_journal
from pollkit.batch.journal._pg_schema import redact_dsn
from pollkit.client._async import AsyncClient
from pollkit.download._destination import resolve_directory
from pollkit.errors import ConfigurationError
from pollkit.policies import Cadence, DownloadPolicy, RetryPolicy
from pollkit.providers.base import Provider

if TYPE_CHECKING:
    from distributed import Worker

    from pollkit.batch.journal._postgres import PostgresJournal

__all__ = ["RunnerPlugin", "RunnerSettings", "work_batch"]

_log = logging.getLogger("pollkit.cluster")


@dataclass(frozen=True)
class RunnerSettings:
    """Everything a worker needs to run its runner; pickled to every worker by Dask.

    The provider carries its API key and `download`'s storage options may carry the store's
    credentials: they travel inside Dask's messages (use TLS for a cluster's comms off one
    machine) and never appear in a repr or a log line.
    """

    provider: Provider = field(repr=False)
    journal: str = field(repr=False)
    download_directory: str
    heartbeat: float = 10.0
    lease: float = 30.0
    capacity: int = 256
    concurrency: int = 16
    rate: float | None = None
    timeout: float | None = None
    resubmit_ambiguous: bool = False
    cadence: Cadence | None = None
    retry: RetryPolicy | None = None
    download: DownloadPolicy | None = None
    max_connections: int = 32

    def __repr__(self) -> str:
        return (
            f"RunnerSettings({self.provider!r}, journal={redact_dsn(self.journal)!r},"
            f" download_directory={self.download_directory!r})"
        )


class RunnerPlugin(WorkerPlugin):  # type: ignore[misc]  # distributed is untyped
    """The Dask worker plugin holding a worker's client, journal and output store.

    Registered once per batch under `name` (idempotent: a driver started again finds it
    there and does not replace it, so the runners at work are left alone).

    Args:
        settings: The batch's settings (provider, journal URL, download directory…).
        name: The plugin's name in Dask (one per batch).
    """

    idempotent = True

    def __init__(self, settings: RunnerSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        self._loop: LoopThread | None = None
        self._client: AsyncClient | None = None
        self._journal: PostgresJournal | None = None
        self._destination: Any = None
        self._running: asyncio.Task[dict[str, Any]] | None = None  # on the loop thread
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RunnerPlugin({self.name!r}, {self.settings!r})"

    def __getstate__(self) -> dict[str, Any]:
        # What travels to the workers: the settings, never a worker's live objects.
        return {"settings": self.settings, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["name"])  # type: ignore[misc]

    async def setup(self, worker: Worker) -> None:
        """Start the runner's loop thread; open the client, the journal and the store."""
        self._loop = LoopThread(f"pollkit-runner-{self.name}", owner="a pollkit runner")
        try:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._open(), self._loop.loop)
            )
        except BaseException:
            self._loop.stop()
            self._loop = None
            raise
        # The runner starts now, not when a task asks: a worker its nanny restarted gets the
        # plugin again from the scheduler, and with it a runner, wherever Dask put the task.
        running = asyncio.run_coroutine_threadsafe(self._start(), self._loop.loop)
        self._running = await asyncio.wrap_future(running)
        _log.info("worker %s: runner of %s started", worker.address, self.name)

    async def _open(self) -> None:
        s = self.settings
        journal = postgres_journal(
            s.journal, heartbeat=s.heartbeat, lease=s.lease, capacity=s.capacity
        )
        client = AsyncClient(
            s.provider,
            cadence=s.cadence,
            retry=s.retry,
            download=s.download,
            max_connections=s.max_connections,
        )
        try:
            await journal.open()
            await client.start()
            self._destination = resolve_directory(
                s.download_directory, s.download or DownloadPolicy()
            )
        except BaseException:
            await client.aclose()
            await journal.aclose()
            raise
        self._client, self._journal = client, journal

    async def teardown(self, worker: Worker) -> None:
        """Stop the runner (its claims are released at once), close everything it held."""
        loop = self._loop
        if loop is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop.loop))
        loop.stop()
        self._loop = None

    async def _shutdown(self) -> None:
        running = self._running
        if running is not None and not running.done():
            running.cancel()  # the runner releases its rows as it stops
            await asyncio.wait([running], timeout=30)
        if self._client is not None:
            await self._client.aclose()
        if self._journal is not None:
            await self._journal.aclose()

    def work(self) -> dict[str, Any]:
        """Run this worker's runner until no job of the batch is left (blocking; called by
        the task from a Dask thread). A runner already at work is waited for instead.

        Returns:
            The runner's counters: jobs done and failed, statements, refused writes.

        Raises:
            ConfigurationError: The plugin is not set up on this worker.
        """
        with self._lock:
            if self._loop is None:
                raise ConfigurationError(f"runner plugin {self.name} is not set up here")
            loop = self._loop.loop
            if self._running is None or self._running.done():
                self._running = asyncio.run_coroutine_threadsafe(self._start(), loop).result()
            running = self._running
        return asyncio.run_coroutine_threadsafe(_wait(running), loop).result()

    async def _start(self) -> asyncio.Task[dict[str, Any]]:
        running = asyncio.ensure_future(self._work())
        running.add_done_callback(self._ended)
        return running

    def _ended(self, running: asyncio.Task[dict[str, Any]]) -> None:
        # Said here too: the runner started by `setup` may have no task waiting for it.
        if not running.cancelled() and running.exception() is not None:
            _log.warning("runner of %s stopped: %r", self.name, running.exception())

    async def _work(self) -> dict[str, Any]:
        client, journal, s = self._client, self._journal, self.settings
        assert client is not None
        assert journal is not None
        ended: Counter[str] = Counter()
        statements_before = journal.statements
        # No items: the driver loaded the batch; this runner only claims from the journal.
        async for event in client.events(
            [],
            download_directory=cast("str", self._destination),  # resolved once, kept here
            journal=journal,
            concurrency=s.concurrency,
            rate=s.rate,
            timeout=s.timeout,
            resubmit_ambiguous=s.resubmit_ambiguous,
        ):
            if event.kind in ("done", "failed"):
                ended[event.kind] += 1
                if event.error is not None:
                    _log.warning("runner: %s failed: %s", event.key, event.error)
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "done": ended["done"],
            "failed": ended["failed"],
            "statements": journal.statements - statements_before,
            "refused_writes": journal.refused_writes,
        }


async def _wait(running: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    # Shielded: a task that stops waiting (its worker closing) does not stop the runner.
    return await asyncio.shield(running)


def work_batch(plugin_name: str) -> dict[str, Any]:
    """The Dask task of a batch: run (or wait for) this worker's runner until the batch ends.

    Args:
        plugin_name: The batch's `RunnerPlugin` name.

    Returns:
        The runner's counters (see `RunnerPlugin.work`).

    Raises:
        ConfigurationError: This worker has no such plugin.
    """
    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, RunnerPlugin):
        raise ConfigurationError(f"worker {worker.address} has no runner plugin {plugin_name!r}")
    secede()  # a runner waits on the network: it must not hold a slot of the thread pool
    return plugin.work()
