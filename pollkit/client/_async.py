"""`AsyncClient`: the public async API."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import random
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from pollkit.batch._runner import batch_events
from pollkit.batch._scheduler import BatchItem, Scheduler
from pollkit.batch.journal._open import JournalArgument, open_journal
from pollkit.client import _duration_cache
from pollkit.client._engine import Engine
from pollkit.core.cadence import DurationModel
from pollkit.core.learning import duration_between, duration_group, prior_for, solve_for
from pollkit.core.schedule import PollSchedule
from pollkit.display._progress import NullProgress, ProgressSink, TqdmProgress
from pollkit.download._destination import Destination, resolve_directory
from pollkit.download._downloader import Downloader, Refresh, SavedFile
from pollkit.errors import ConfigurationError, URLExpired
from pollkit.models import Event, JobState, Output, Result, Status
from pollkit.policies import Cadence, DownloadPolicy, RetryPolicy, SubmitPolicy
from pollkit.providers.base import Provider, Request, Response, Submission
from pollkit.push._hub import Notifications, PushSource
from pollkit.transport._body import Body
from pollkit.transport._http import Transport, UploadProgress

if TYPE_CHECKING:  # only a parameter's type: the transport owns every aiohttp call
    import aiohttp

__all__ = ["AsyncClient"]

# `async with` gives back the client's own class (PixyClient, PixyzClient…).
_C = TypeVar("_C", bound="AsyncClient")


class AsyncClient:
    """Submit jobs to one provider, wait for them and download their outputs.

    Use it as ``async with AsyncClient(provider) as client:`` so the HTTP session is closed.

    Args:
        provider: The API to talk to, e.g. ``MagicHour(api_key=..., base_url=...)``.
        cadence: Default polling policy.
        retry: Default retry policy for polls and downloads.
        timeout: Seconds to wait for a connection or a read before giving up on one attempt.
        max_connections: Connections open at once, polls and downloads together.
        session: An `aiohttp.ClientSession` of yours; pollkit uses it and never closes it.
        download: How outputs are saved: names, existing files, concurrency, stall timeout,
            bandwidth cap, archive extraction.
        seed: Seed for the jitter, for reproducible schedules.
        logger: Where each request and response line is logged at DEBUG (default
            ``pollkit.http``); ``POLLKIT_DEBUG=1`` in the environment logs them to stderr.
            Keys, tokens and signed URLs' query strings never appear in them.
        push: A source of server push (`StatusStream`, `WebhookReceiver`), started with the
            client and closed with it: waits then end on a notification instead of a poll,
            and fall back to polling when it drops (see `Cadence.push_window`).
        submit: Which failed submits are sent again, and how an ambiguous one is looked up
            (`SubmitPolicy`); the waits between attempts are `retry`'s.
        learn: Keep the durations of finished jobs in the user's cache directory (per
            provider and kind, never a key or a spec's text; see the README) and poll by the
            schedule they give. False, or ``POLLKIT_NO_CACHE=1``, keeps them in this client
            only.

    Raises:
        ConfigurationError: An argument is invalid.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        cadence: Cadence | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        max_connections: int = 32,
        session: aiohttp.ClientSession | None = None,
        download: DownloadPolicy | None = None,
        seed: int | None = None,
        logger: logging.Logger | None = None,
        push: PushSource | None = None,
        submit: SubmitPolicy | None = None,
        learn: bool = True,
    ) -> None:
        if not isinstance(provider, Provider):
            raise ConfigurationError(f"provider must be a pollkit Provider, got {provider!r}")
        self.provider = provider
        self.cadence = cadence or Cadence()
        self._transport = Transport(
            retry=retry or RetryPolicy(),
            timeout=timeout,
            max_connections=max_connections,
            max_connections_per_host=max_connections,
            session=session,
            secrets=provider.secrets,
            logger=logger,
        )
        self.submit_policy = submit or SubmitPolicy()
        self._engine = Engine(
            provider, self._transport, rng=random.Random(seed), submit_policy=self.submit_policy
        )
        # Engines of the same provider on other servers (the calls' `base_url`), by URL.
        self._elsewhere: dict[str, Engine] = {}
        self._downloader = Downloader(self._transport, download, auth=self._download_headers)
        self._rng = random.Random(seed)
        # Durations seen in batches; they teach the cadence when jobs are likely to end.
        self._durations = DurationModel()
        self._persist = learn and _duration_cache.enabled()
        self._cache_loaded = False
        # Schedules solved for check_result, per group: (samples they reflect, schedule).
        self._schedules: dict[tuple[str, Cadence], tuple[int, PollSchedule]] = {}
        self._solving: dict[tuple[str, Cadence], asyncio.Future[PollSchedule]] = {}
        if push is not None and not isinstance(push, PushSource):
            raise ConfigurationError(f"push must be a StatusStream or a WebhookReceiver: {push!r}")
        self.push = push
        self._push_started = False

    async def __aenter__(self: _C) -> _C:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Send the provider's start-up request (Pixy's key check), once; `async with` does.

        Other methods call it themselves, so it is only needed to fail early.

        Raises:
            AuthenticationError: The API key was refused.
        """
        await self._engine.start()
        await self._start_push()

    async def _start_push(self) -> Notifications | None:
        """The push source's hub, started on first use."""
        if self.push is None:
            return None
        if not self._push_started:
            self._push_started = True
            await self.push.start(self._transport)
        return self.push.notifications

    async def aclose(self) -> None:
        """Close the push source and the HTTP session pollkit created (a session passed in
        stays open)."""
        try:
            if self.push is not None and self._push_started:
                await self.push.aclose()
        finally:
            try:
                await self._save_durations()
            finally:
                await self._transport.aclose()

    def _learned(self) -> DurationModel:
        """The durations model, with earlier runs' durations read in on first use."""
        if self._persist and not self._cache_loaded:
            self._cache_loaded = True
            self._durations.load(_duration_cache.load())
        return self._durations

    async def _save_durations(self) -> None:
        """Add the durations learned since the last save to the cache file."""
        new = self._durations.take_new()
        if self._persist and new:
            await asyncio.to_thread(_duration_cache.save, new)

    async def _schedule_for(
        self, engine: Engine, kind: str | None, cadence: Cadence
    ) -> PollSchedule | None:
        """The poll schedule for a job of `kind` from the durations learned, or None while too
        few are known (the cadence's backoff then decides)."""
        group = duration_group(engine.provider.name, kind)
        samples = self._learned().samples(group)
        if samples is None:
            return None
        key = (group, cadence)
        known = self._schedules.get(key)
        if known is not None and len(samples) - known[0] < max(3, known[0] // 2):
            return known[1]
        solving = self._solving.get(key)
        if solving is None:
            # A solve takes a few tenths of a second of CPU: not on the event loop, and once
            # for the many waits that start together.
            prior = prior_for(engine.provider.name, kind, cadence)
            known_samples = list(samples)

            async def solve() -> PollSchedule:
                work = functools.partial(solve_for, complete=known_samples)
                schedule = await asyncio.to_thread(work, known_samples, [], prior, cadence)
                self._schedules[key] = (len(known_samples), schedule)
                return schedule

            solving = asyncio.ensure_future(solve())
            self._solving[key] = solving
            solving.add_done_callback(lambda _: self._solving.pop(key, None))
        return await asyncio.shield(solving)

    def _on(self, base_url: str | None) -> Engine:
        """The engine for the client's server, or for another one given to a call."""
        key = None if base_url is None else base_url.rstrip("/")
        if key is None or key == self.provider.base_url:
            return self._engine
        if key not in self._elsewhere:
            provider = self.provider.with_base_url(key)
            self._elsewhere[key] = Engine(
                provider, self._transport, rng=self._rng, submit_policy=self.submit_policy
            )
        return self._elsewhere[key]

    def _download_headers(self, url: str) -> Mapping[str, str]:
        # Each provider gives its credentials only to URLs on its own server.
        for engine in (self._engine, *self._elsewhere.values()):
            headers = engine.provider.download_headers(url)
            if headers:
                return headers
        return {}

    def _cadence(self, timeout: float | None, cadence: Cadence | None) -> Cadence:
        chosen = cadence or self.cadence
        if timeout is not None:
            number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
            if not number or not 0 < timeout < math.inf:
                raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
            chosen = chosen.model_copy(update={"timeout": float(timeout)})
        return chosen

    async def submit(
        self,
        spec: Mapping[str, Any],
        *,
        on_upload: UploadProgress | None = None,
        base_url: str | None = None,
    ) -> Submission:
        """Create a job.

        Args:
            spec: The job, in the provider's terms.
            on_upload: Told how many bytes of the spec's files were sent (from a worker
                thread), for an upload progress bar.
            base_url: Another server of the same API for this call (same key and settings).

        Returns:
            The new job's id and kind.

        Raises:
            ConfigurationError: The spec is invalid (nothing was sent).
            APIError: The server refused it.
        """
        submission = await self._on(base_url).submit(spec, on_upload=on_upload)
        if self.push is not None and self._push_started:
            # Its notifications will all reach the push hub: a wait on it need not poll first.
            self.push.notifications.expect(submission.job_id)
        return submission

    async def get(
        self, job_id: str, *, kind: str | None = None, base_url: str | None = None
    ) -> JobState:
        """Read a job's state once (`base_url`: from another server of the same API).

        Raises:
            NotFound: No such job.
            APIError, TransportError: The request failed (after retries for transient errors).
        """
        state, _ = await self._on(base_url).observe(job_id, kind)
        return state

    async def wait(
        self,
        job_id: str,
        *,
        kind: str | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        interval: float | None = None,
        on_state: Callable[[JobState], None] | None = None,
        base_url: str | None = None,
    ) -> JobState:
        """Poll until the job is terminal and return its final state.

        Args:
            job_id: The job.
            kind: The provider's job kind when known (saves a request on some APIs).
            timeout: Deadline in seconds; overrides the cadence's.
            cadence: Polling policy for this call.
            interval: Poll every `interval` seconds instead, without growth or jitter (a
                terminal's watch); not with `cadence`. The client's deadline still applies.
            on_state: Called with every state observed (a progress display, say).
            base_url: Another server of the same API for this call (same key and settings).

        Raises:
            ConfigurationError: Both `cadence` and `interval`, or an interval that is not a
                positive number of seconds.
            PollTimeout: Not terminal by the deadline (carries the last state).
        """
        if interval is not None:
            if cadence is not None:
                raise ConfigurationError("wait takes a cadence or an interval, not both")
            fixed = {"initial": interval, "maximum": interval, "multiplier": 1.0, "jitter": 0.0}
            cadence = self.cadence.model_copy(update=fixed)
        watch = await self._on(base_url).wait(
            job_id,
            kind,
            cadence=self._cadence(timeout, cadence),
            on_state=on_state,
            push=await self._start_push(),
        )
        return watch.state

    async def send(
        self, request: Request | Sequence[Request], *, on_upload: UploadProgress | None = None
    ) -> Response:
        """Send a request the provider built for an operation beyond jobs (a process list, a
        job's details, an update…), with the client's session, key check, retries and error
        mapping. Given several, send each in turn while the previous one answered 404 (APIs
        that route by a job kind the caller may not know).

        Raises:
            APIError, TransportError: The request failed (after retries for transient errors).
        """
        if isinstance(request, Request):
            await self._engine.start()
            return await self._transport.send(request, on_upload=on_upload)
        return await self._engine.first_found(request)

    async def open_stream(
        self,
        request: Request,
        *,
        media_type: str = "text/event-stream",
        retry: RetryPolicy | None = None,
    ) -> Body:
        """Send a request the provider built and return the open response, to read as a
        stream (server-sent events, with `Body.iter_chunks`); close it when done. The initial
        response is retried like any request; the key check runs first.

        Raises:
            APIError: The server answered 4xx/5xx (after retries).
            ProtocolError: The answer was not 200 with `media_type`.
            TransportError: No reply could be had (after retries).
        """
        await self._engine.start()
        return await self._transport.open_stream(request, media_type=media_type, retry=retry)

    async def download(
        self,
        output: Output,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        job_id: str | None = None,
        progress: bool | ProgressSink = False,
    ) -> SavedFile:
        """Download one output (with the provider's credentials, 425 waits and extraction as
        the download policy says).

        Args:
            output: What to download (e.g. from the provider's output helpers).
            directory: Where (created if missing), a folder or an fsspec URL (see
                `check_result`); `SavedFile.destination` is then the object's URL.
            name: The file name to use instead of the name template's.
            job_id: The job, for naming and messages.
            progress: True for tqdm bars, or a `ProgressSink`.

        Raises:
            DownloadError: The file could not be saved.
            APIError: The server refused the download.
        """
        sink = _sink(progress, jobs=False)
        try:
            return await self._downloader.fetch(
                output, directory, job_id=job_id, name=name, progress=sink
            )
        finally:
            if progress is True:
                sink.close()

    async def cancel(
        self, job_id: str, *, kind: str | None = None, base_url: str | None = None
    ) -> None:
        """Cancel a job (`base_url`: on another server of the same API).

        Raises:
            UnsupportedOperation: The API cannot cancel jobs (Magic Hour cannot).
        """
        await self._on(base_url).cancel(job_id, kind)

    async def delete(
        self, job_id: str, *, kind: str | None = None, base_url: str | None = None
    ) -> JobState | None:
        """Delete a job and its outputs on the server (`base_url`: another server of the same
        API).

        Returns:
            The job as the server showed it on deletion where the API answers with it (Pixy's
            soft delete: ``is_deleted`` in ``raw``; an unfinished job is `Status.CANCELED`),
            else None.

        Raises:
            NotFound: No such job (or it was deleted already).
        """
        return await self._on(base_url).delete(job_id, kind)

    async def check_result(
        self,
        job_id: str,
        wait_for_completion: bool = True,
        download_outputs: bool = True,
        download_directory: str | os.PathLike[str] | None = None,
        *,
        kind: str | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        progress: bool | ProgressSink = False,
        submitted_at: datetime | None = None,
        base_url: str | None = None,
    ) -> Result:
        """Read a job, optionally wait for it to finish and download its outputs.

        A job that ends in `error` or `canceled` is returned, not raised: call
        `Result.raise_for_status()` for an exception.

        Args:
            job_id: The job.
            wait_for_completion: Poll until the job is terminal; otherwise read it once.
            download_outputs: Download the outputs of a completed job.
            download_directory: Where to put them (created if missing; default: the current
                directory): a folder, or an fsspec URL (``s3://bucket/run``, ``memory://x``;
                needs ``pollkit[fsspec]``), where each file is spooled, verified, then put
                without overwriting (`Result.destinations` lists the URLs).
            kind: The provider's job kind when known.
            timeout: Deadline of the wait in seconds; overrides the cadence's.
            cadence: Polling policy for this call.
            progress: True for tqdm bars, or a `ProgressSink` of your own.
            submitted_at: When the job was submitted, to report on the `Result`.
            base_url: Another server of the same API for this call (same key and settings).

        Raises:
            PollTimeout: Not terminal by the deadline.
            APIError, TransportError: A request failed after its retries.
            DownloadError: An output could not be saved.
        """
        chosen = self._cadence(timeout, cadence)
        engine = self._on(base_url)
        sink = _sink(progress, jobs=False)
        try:
            if wait_for_completion:
                age = None
                if submitted_at is not None:
                    age = max((datetime.now(timezone.utc) - submitted_at).total_seconds(), 0.0)
                seen: list[datetime] = []

                def on_state(state: JobState) -> None:
                    seen.append(state.observed_at)
                    sink.job_status(job_id, state.status)

                schedule = await self._schedule_for(engine, kind, chosen)
                watch = await engine.wait(
                    job_id,
                    kind,
                    cadence=chosen,
                    on_state=on_state,
                    push=await self._start_push(),
                    schedule=schedule,
                    age=age,
                )
                state, polls = watch.state, watch.polls
                if submitted_at is not None and state.is_terminal:
                    # It ended between the last two observations (the last one alone would
                    # teach the cadence its own lag): see `PollSchedule.ended_between`.
                    before = seen[-2] if len(seen) > 1 else submitted_at
                    low = (before - submitted_at).total_seconds()
                    high = (state.observed_at - submitted_at).total_seconds()
                    took = duration_between(schedule, low, high, self._rng.random())
                    if took > 0:
                        group = duration_group(engine.provider.name, state.kind or kind)
                        self._learned().observe(group, took)
            else:
                state, polls = await self.get(job_id, kind=kind, base_url=base_url), 1
            finished = state.observed_at if state.is_terminal else None
            paths: tuple[Path, ...] = ()
            urls: tuple[str, ...] = ()
            extracted: tuple[Path, ...] = ()
            digests: tuple[str, ...] = ()
            if download_outputs and wait_for_completion and state.status is Status.COMPLETE:
                saved = await self._downloader.fetch_all(
                    state,
                    download_directory if download_directory is not None else os.curdir,
                    refresh=self._refresher(job_id, state.kind, engine),
                    progress=sink,
                    fields=engine.provider.name_fields(state),
                )
                paths = tuple(f.path for f in saved if f.destination is None)
                urls = tuple(f.destination for f in saved if f.destination is not None)
                digests = tuple(f.sha256 for f in saved)
                extracted = tuple(p for f in saved for p in f.extracted)
        finally:
            if progress is True:
                sink.close()
        return Result(
            state=state,
            downloaded_paths=paths,
            extracted_paths=extracted,
            sha256=digests,
            polls=polls,
            submitted_at=submitted_at,
            finished_at=finished,
            noticed_at=finished,
            destinations=urls,
        )

    def _refresher(self, job_id: str, kind: str | None, engine: Engine | None = None) -> Refresh:
        """Re-read the job for a fresh URL of an output whose URL expired."""

        async def refresh(stale: Output) -> Output:
            state, _ = await (engine or self._engine).observe(job_id, kind)
            for output in state.outputs:
                if output.index == stale.index and output.url:
                    return output
            raise URLExpired(
                f"the job no longer lists output {stale.index}", job_id=job_id, url=stale.url
            )

        return refresh

    async def events(
        self,
        items: Iterable[BatchItem],
        *,
        download_directory: str | os.PathLike[str],
        journal: JournalArgument = True,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        download_outputs: bool = True,
        resubmit_ambiguous: bool = False,
        on_event: Callable[[Event], None] | None = None,
        progress: bool | ProgressSink = False,
        join: bool = False,
    ) -> AsyncGenerator[Event, None]:
        """Run a batch and yield every event of it; see `run` for the arguments."""
        directory = resolve_directory(download_directory, self._downloader.policy)
        # The default journal must be on local disk: for a URL, it lives in the spool.
        local = directory.spool if isinstance(directory, Destination) else directory
        chosen = self._cadence(timeout, cadence)
        sink = _sink(progress, jobs=True)
        try:
            # An SQLite journal is locked before it is read: a second run of the batch must
            # refuse before it has seen, let alone sent, anything.
            async with open_journal(journal, local) as book:
                scheduler = Scheduler(
                    self._engine,
                    self._downloader,
                    cadence=chosen,
                    durations=self._learned(),
                    journal=book,
                    directory=directory,
                    concurrency=concurrency,
                    rate=rate,
                    download_outputs=download_outputs,
                    resubmit_ambiguous=resubmit_ambiguous,
                    on_event=on_event,
                    progress=sink,
                    refresher=self._refresher,
                    rng=self._rng,
                    push=await self._start_push(),
                )
                async for event in batch_events(scheduler, book, items, join=join):
                    yield event
        finally:
            if progress is True:
                sink.close()
            await self._save_durations()

    async def run(
        self,
        items: Iterable[BatchItem],
        *,
        download_directory: str | os.PathLike[str],
        journal: JournalArgument = True,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        download_outputs: bool = True,
        resubmit_ambiguous: bool = False,
        on_event: Callable[[Event], None] | None = None,
        progress: bool | ProgressSink = False,
        join: bool = False,
    ) -> AsyncGenerator[Result, None]:
        """Submit a batch, wait for every job and download their outputs; yield results as
        jobs finish (``async for result in client.run(specs, download_directory="out")``).

        One scheduler tracks every job (a heap of next-poll times); a job's outputs download
        as soon as it completes. A job that fails, is canceled or times out yields a `Result`
        saying so (`Result.error` when the batch gave up on it); the batch goes on.

        Args:
            items: Specs, existing job ids (wait and download only), or ``(key, spec)``.
            download_directory: Where outputs go (created if missing): a folder, or an fsspec
                URL (``s3://bucket/run/``; needs ``pollkit[fsspec]``) where each output is
                spooled, verified, put without overwriting, and only then recorded with its
                URL; a store that refuses the write fails that job with a `StorageError`.
            journal: True for ``<download_directory>/.pollkit/journal.sqlite`` (for a URL:
                ``.pollkit/journal.sqlite`` in its spool folder), a path, an
                `SQLiteJournal`, any `Journal` (left open), or False for none. With a journal a
                rerun of the same batch submits nothing twice and downloads nothing twice.
            concurrency: Submits, and polls, in flight at once.
            rate: Most submits per second; None: no limit.
            timeout: Deadline of each job, in seconds from its submission.
            cadence: Polling policy (the durations seen in the batch refine it).
            download_outputs: Download the outputs of completed jobs.
            resubmit_ambiguous: Submit again a spec whose earlier submit may have created its
                job (a 500, 502 or 504, a reset after sending, or in flight when a run died)
                and could not be looked up (Magic Hour has no way to ask): it may be paid
                twice. APIs with a tag lookup (PiXYZ) resolve such specs without it.
            on_event: Called with every `Event` (submitted, status, progress, downloads, done,
                failed).
            progress: True for tqdm bars (jobs with counts per status, and bytes), or a sink.
            join: With a ``postgresql://`` journal that several runners share: also yield the
                results of the jobs the other runners finish, so that this call yields every
                job of the batch (their files are where those runners saved them).

        Raises:
            AuthenticationError: The API key was refused (nothing else would work either).
                Submits already on the wire are let finish and recorded first.
            JournalBusy: Another live run holds the journal; nothing was sent.
            ConfigurationError: `journal` is a URL pollkit cannot open (any but
                ``postgresql://…``), or `join` without a ``postgresql://`` journal.
        """
        async for event in self.events(
            items,
            download_directory=download_directory,
            journal=journal,
            concurrency=concurrency,
            rate=rate,
            timeout=timeout,
            cadence=cadence,
            download_outputs=download_outputs,
            resubmit_ambiguous=resubmit_ambiguous,
            on_event=on_event,
            progress=progress,
            join=join,
        ):
            if event.result is not None and event.kind in ("done", "failed"):
                yield event.result

    async def submit_and_check(
        self,
        spec: Mapping[str, Any],
        download_directory: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Result:
        """Submit a job, wait for it and download its outputs: `submit` then `check_result`
        (a `base_url` among the keyword arguments applies to both)."""
        submission = await self.submit(spec, base_url=kwargs.get("base_url"))
        return await self.check_result(
            submission.job_id,
            download_directory=download_directory,
            kind=submission.kind,
            submitted_at=submission.submitted_at,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self.provider!r})"


def _sink(progress: bool | ProgressSink, *, jobs: bool) -> ProgressSink:
    """The sink a call's ``progress`` argument asks for (bars it creates, it must close)."""
    if progress is True:
        return TqdmProgress(jobs=jobs)
    if progress is False:
        return NullProgress()
    return progress
