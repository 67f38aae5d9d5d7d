"""Streaming outputs to disk without ever losing a byte.

Each output goes to ``<name>.part`` in chunks, hashed (sha256) in the same thread call as the
write, so a finished file is never read again; its length (and checksum, when the API or a
digest-shaped ETag gives one) is checked, then it is renamed atomically.

An interrupted download continues where it stopped, in this process or a later one: the
reply's validator (ETag or Last-Modified) is kept beside the `.part` (``.part.json``) and sent
back in ``If-Range``, so a changed file restarts cleanly instead of mixing versions. Transient
failures (connection resets, truncated bodies, stalls, 5xx) retry the missing range with
backoff; an expired URL (403/410, or past `expires_at`) is refreshed through a callback that
re-reads the job. A file already at the target with the same bytes is kept; a different one is
handled by `DownloadPolicy.existing`, never silently overwritten by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pollkit.core.cadence import PollHints, next_poll_delay
from pollkit.core.naming import checksum_from_etag, extension, render_name, safe_name, url_basename
from pollkit.core.ratelimit import TokenBucket
from pollkit.core.resume import Partial, ResumeAction, decide, range_headers, total_size
from pollkit.core.retry import is_retryable, retry_after_of
from pollkit.display._progress import NullProgress, ProgressSink
from pollkit.download._archive import extract_zip
from pollkit.download._destination import Destination, resolve_directory
from pollkit.download._partfile import PartFile, file_matches
from pollkit.errors import (
    ChecksumMismatch,
    DownloadError,
    IncompleteDownload,
    NotReady,
    PollkitError,
    StorageError,
    UnsafePath,
    URLExpired,
)
from pollkit.models import JobState, Output
from pollkit.policies import DownloadPolicy, RetryPolicy
from pollkit.providers.base import Request, Response
from pollkit.transport._body import Body
from pollkit.transport._errors import error_for_status, redact_url
from pollkit.transport._http import Transport

__all__ = ["Downloader", "Refresh", "SavedFile", "fetch_urls", "names_for_urls"]

_log = logging.getLogger("pollkit.download")

# Files smaller than this restart from zero instead of resuming: keeping a validator beside
# them would cost a write per file for a transfer that takes milliseconds.
RESUMABLE_FROM = 8 << 20
# Bodies from this size on are received straight into reusable buffers
# (`pollkit.transport._bodysink`), at the cost of a new connection per file.
TAKE_OVER_FROM = 4 << 20
# Progress is reported in batches of at least this many bytes (or at the end of a file).
_PROGRESS_BATCH = 4 << 20

_T = TypeVar("_T")

Refresh = Callable[[Output], Awaitable[Output]]
#: The headers a download of this URL needs (a provider's `download_headers`).
AuthHeaders = Callable[[str], Mapping[str, str]]
"""Given an output whose URL stopped working, return the same output with a fresh URL."""

# Disk work goes to a small dedicated pool: a slow write must never stall the event loop
# (and with it every poll), and docs/design/downloads.md measured two threads never worse than more.
_WRITERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pollkit-write")


@dataclass(frozen=True, slots=True)
class SavedFile:
    """One output on disk.

    Attributes:
        path: Where it is.
        size: Its size in bytes.
        sha256: Hex digest of its bytes.
        reused: True when the file was already there with the same bytes (nothing downloaded).
        url: The URL it came from, without its query string.
        extracted: Files extracted from it, when it is an archive and extraction was asked.
        destination: The URL it was delivered to, when the directory was an fsspec URL
            (`path` is then where it was spooled, removed once delivered).
    """

    path: Path
    size: int
    sha256: str
    reused: bool = False
    url: str | None = None
    extracted: tuple[Path, ...] = ()
    destination: str | None = None

    @property
    def location(self) -> str:
        """Where the output is now: its URL at an fsspec destination, else its path."""
        return self.destination or os.fspath(self.path)


# --- the engine ----------------------------------------------------------------------------


def _retryable(error: BaseException, policy: RetryPolicy, can_refresh: bool) -> bool:
    """Whether a failed download attempt is worth another, from the bytes already on disk."""
    if isinstance(error, URLExpired):
        return can_refresh
    if isinstance(error, NotReady):
        return False  # waited for on its own cadence, outside the retry budget
    if isinstance(error, (IncompleteDownload, ChecksumMismatch)):
        return True
    return is_retryable(error, policy)


class Downloader:
    """Downloads outputs concurrently, within the connection budget it shares with polling.

    Args:
        transport: The client's transport (its session, limits and retry policy).
        policy: Naming, existing files, concurrency, stall timeout, bandwidth cap.
        progress: Where bytes are reported.
        retry: Retry policy for downloads (default: the transport's).
        auth: The headers each URL needs (credentials for an API's own file routes).
    """

    def __init__(
        self,
        transport: Transport,
        policy: DownloadPolicy | None = None,
        *,
        progress: ProgressSink | None = None,
        retry: RetryPolicy | None = None,
        auth: AuthHeaders | None = None,
    ) -> None:
        self.transport = transport
        self._auth = auth
        self.policy = policy or DownloadPolicy()
        self.progress = progress or NullProgress()
        self.retry = retry or transport.retry
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        # A burst of one chunk: the cap holds from the first megabyte, even for small files.
        self._bucket = (
            TokenBucket(self.policy.bandwidth, burst=self.policy.chunk_size)
            if self.policy.bandwidth
            else None
        )

    def target_name(
        self,
        output: Output,
        *,
        job_id: str | None,
        kind: str | None,
        fields: dict[str, str] | None = None,
    ) -> str:
        """The file name `output` is saved under (before any conflict renaming).

        Raises:
            UnsafePath: The template produced a name with a directory part.
            DownloadError: The template is malformed.
        """
        suggested = output.name or url_basename(output.url)
        ext = extension(name=suggested, media_type=output.media_type)
        try:
            name = render_name(
                self.policy.name_template,
                job_id=job_id,
                index=output.index,
                suggested=suggested,
                ext=ext,
                kind=kind,
                fields=fields,
            )
        except (KeyError, IndexError, ValueError) as exc:
            reason = exc.args[0] if exc.args else exc
            raise DownloadError(f"name template: {reason}", job_id=job_id) from exc
        if not safe_name(name):
            raise UnsafePath(f"unsafe file name {name!r}", job_id=job_id)
        return name

    async def fetch_all(
        self,
        state: JobState,
        directory: str | os.PathLike[str] | Destination,
        *,
        refresh: Refresh | None = None,
        progress: ProgressSink | None = None,
        fields: dict[str, str] | None = None,
    ) -> list[SavedFile]:
        """Download every output of a job into `directory` (created if missing), a folder or
        an fsspec URL (`pollkit.download._destination`).

        Returns:
            One `SavedFile` per output, in output order.

        Raises:
            DownloadError: An output could not be saved (every output is attempted; the first
                error is raised).
        """
        where = resolve_directory(directory, self.policy)
        results = await asyncio.gather(
            *(
                self.fetch(
                    o,
                    where,
                    job_id=state.job_id,
                    kind=state.kind,
                    refresh=refresh,
                    progress=progress,
                    fields=fields,
                )
                for o in state.outputs
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, SavedFile)]

    async def fetch(
        self,
        output: Output,
        directory: str | os.PathLike[str] | Destination,
        *,
        job_id: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        refresh: Refresh | None = None,
        progress: ProgressSink | None = None,
        fields: dict[str, str] | None = None,
    ) -> SavedFile:
        """Download one output into `directory` (created if missing).

        Args:
            output: What to download.
            directory: Where: a folder, or an fsspec URL (``s3://bucket/run``) or `Destination`,
                where the file is spooled locally first, then put with create-only semantics.
            job_id: The job, for naming and messages.
            kind: The job's kind, for naming.
            name: A file name to use instead of the template's.
            refresh: Returns the output with a fresh URL when this one has expired.
            progress: Where this download's bytes are reported (default: the downloader's).
            fields: The provider's name fields for the template.

        Raises:
            DownloadError: The file could not be saved (a subclass says why); the `.part` with
                the bytes received so far is kept for a later resume.
            APIError: The server refused the download for a reason other than expiry.
            ConfigurationError: `directory` is a URL whose protocol cannot be used.
        """
        if output.url is None:
            raise DownloadError(f"output {output.index} has no URL", job_id=job_id)
        where = resolve_directory(directory, self.policy)
        if isinstance(where, Destination):
            return await where.fetch(
                self,
                output,
                job_id=job_id,
                kind=kind,
                name=name,
                refresh=refresh,
                progress=progress,
                fields=fields,
            )
        file_name = name or self.target_name(output, job_id=job_id, kind=kind, fields=fields)
        if not safe_name(file_name):
            raise UnsafePath(f"unsafe file name {file_name!r}", job_id=job_id)
        target = PartFile(
            path=where / file_name,
            expected_sha256=output.sha256.lower() if output.sha256 else None,
            progress=progress or self.progress,
        )
        current = output
        refused = False  # the server refused `current` as expired

        async def attempt() -> SavedFile:
            nonlocal current, refused
            # Refreshed right before it is used, not when the refusal came: a URL fetched
            # before the retry's backoff wait could expire during it (short-lived URLs do).
            if refresh is not None and (refused or _expired(current)):
                _log.debug("URL of %s expired; re-reading the job", target.path.name)
                current = await refresh(current)
                refused = False
            try:
                return await self._attempt(current, target, job_id)
            except URLExpired:
                refused = True
                raise

        retrying = self.transport.retrying(
            attempt,
            self.retry,
            what=f"download {target.path.name}",
            giveup=lambda exc: not _retryable(exc, self.retry, refresh is not None),
        )
        loop = asyncio.get_running_loop()
        started, polls = loop.time(), 0
        while True:
            async with self._slots:
                try:
                    saved: SavedFile = await retrying()
                    break
                except NotReady as exc:
                    not_ready = exc
                finally:
                    if target.handle is not None:  # a finished file closed it already
                        await loop.run_in_executor(_WRITERS, target.release)
            # 425 Too Early: wait for the server to finish the file, outside the slot.
            polls += 1
            delay = next_poll_delay(
                self.policy.not_ready,
                polls=polls,
                elapsed=loop.time() - started,
                hints=PollHints(retry_after=retry_after_of(not_ready)),
                rand=random.random(),
            )
            if delay is None:
                raise not_ready
            _log.debug("%s is not ready yet (HTTP 425); asking again in %.2f s", file_name, delay)
            await asyncio.sleep(delay)
        if output.is_archive and self.policy.extract_archives:
            saved = await self._extract(saved, job_id)
        return saved

    async def _extract(self, saved: SavedFile, job_id: str | None) -> SavedFile:
        """Extract an archive into a folder named after it, beside it."""
        folder = saved.path.with_name(saved.path.name.removesuffix(".zip") or "archive")
        extract = functools.partial(
            extract_zip,
            saved.path,
            folder,
            max_bytes=self.policy.max_extract_bytes,
            max_ratio=self.policy.max_extract_ratio,
        )
        # The default pool, not the writers: a large archive must not hold up downloads.
        files = await asyncio.get_running_loop().run_in_executor(None, extract)
        _log.debug("job %s: extracted %d files into %s", job_id, len(files), folder)
        return dataclasses.replace(saved, extracted=tuple(files))

    async def _attempt(self, output: Output, target: PartFile, job_id: str | None) -> SavedFile:
        """One request: resume or restart, stream, verify, finish."""
        loop = asyncio.get_running_loop()
        url = output.url
        assert url is not None
        if target.handle is None:
            try:
                await loop.run_in_executor(_WRITERS, target.open)
            except OSError as exc:
                raise StorageError(
                    f"cannot write: {exc.strerror}", job_id=job_id, path=str(target.part)
                ) from exc
        partial = target.partial()
        auth = self._auth(url) if self._auth is not None else {}
        headers = {"Accept-Encoding": "identity", **auth, **range_headers(partial)}
        async with self.transport.download(
            url,
            headers,
            stall_timeout=self.policy.stall_timeout,
            follow_redirects=not auth,  # credentials must not follow a redirect to another host
            job_id=job_id,
        ) as reply:
            status = reply.status
            if status in (403, 410):
                raise URLExpired(f"URL refused with HTTP {status}", job_id=job_id, url=url)
            if status not in (200, 206, 416):
                body = await reply.read()
                answer = Response(
                    status, reply.headers, body, Request("GET", url, "download", job_id)
                )
                raise error_for_status(answer) or DownloadError(
                    f"unexpected HTTP {status}", job_id=job_id, url=url
                )
            return await self._receive(reply, partial, target, job_id)

    async def _receive(
        self,
        reply: Body,
        partial: Partial | None,
        target: PartFile,
        job_id: str | None,
    ) -> SavedFile:
        total = total_size(reply.status, reply.headers)
        expected = target.expected_sha256 or checksum_from_etag(reply.headers.get("ETag"))
        source = redact_url(reply.url)
        action = decide(partial, reply.status, reply.headers)
        if (
            action is ResumeAction.RESTART
            and target.existing_size is not None
            and total is not None
        ):
            kept = await self._existing(target, total, expected)
            if kept is not None:
                return SavedFile(target.path, *kept, reused=True, url=source)
        if not target.announced and total is not None:
            target.progress.add_bytes_total(total)
            target.progress.advance_bytes(target.written)
            target.announced = True
        if action is ResumeAction.RESTART:
            if partial is not None:
                _log.debug("%s: the server sent the whole file; restarting", target.path.name)
            target.progress.advance_bytes(-target.written)
            target.etag = reply.headers.get("ETag")
            target.last_modified = reply.headers.get("Last-Modified")
            resumable = total is None or total >= RESUMABLE_FROM
            if target.written or resumable:
                await self._disk(target, target.restart, resumable, job_id=job_id)
        if action is not ResumeAction.COMPLETE:
            await self._stream(reply, target, total, job_id)
        if total is not None and target.written != total:
            raise IncompleteDownload(
                f"got {target.written} of {total} bytes",
                job_id=job_id,
                url=source,
                path=str(target.part),
            )
        sha256 = target.digest.hexdigest()
        if expected and sha256 != expected:
            # The bytes on disk are wrong: start over rather than resume on top of them.
            target.progress.advance_bytes(-target.written)
            await self._disk(target, target.restart, False, job_id=job_id)
            raise ChecksumMismatch(
                f"sha256 {sha256} is not the announced {expected}", job_id=job_id, url=source
            )
        path, reused = await self._disk(
            target, target.finish, self.policy.existing, self.policy.fsync, job_id=job_id
        )
        _log.debug("saved %s (%d bytes)", path, target.written)
        return SavedFile(path, target.written, sha256, reused=reused, url=source)

    async def _existing(
        self, target: PartFile, total: int, expected: str | None
    ) -> tuple[int, str] | None:
        """Size and sha256 of a file at the target that is to be kept instead of downloading."""
        loop = asyncio.get_running_loop()
        if target.existing_size == total and await loop.run_in_executor(
            _WRITERS, file_matches, target.path, total, expected
        ):
            _log.debug("%s is already complete", target.path)
        elif self.policy.existing == "skip":
            _log.warning("%s holds other bytes; kept it (existing='skip')", target.path)
        else:
            return None
        return await self._disk(target, target.keep_existing)

    async def _disk(
        self, target: PartFile, func: Callable[..., _T], *args: Any, job_id: str | None = None
    ) -> _T:
        """Run blocking work on `target` in the writer pool; an OS refusal is a StorageError."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_WRITERS, _disk_call, target, job_id, func, *args)

    async def _stream(
        self,
        reply: Body,
        target: PartFile,
        total: int | None,
        job_id: str | None,
    ) -> None:
        """Append the body to the `.part`, hashing it on the way, one write in flight while the
        next bytes are received; a large body is taken off aiohttp
        (`pollkit.transport._bodysink`)."""
        counter = _Counter(target, total)
        try:
            if (
                self._bucket is None
                and (reply.content_length or 0) >= TAKE_OVER_FROM
                and reply.can_take_over()
            ):
                # Appending one buffer while the one before is hashed: two threads, in order.
                stages = (
                    functools.partial(_disk_call, target, job_id, target.append),
                    target.digest.update,
                )
                await reply.receive_into(
                    stages,
                    on_written=counter.add,
                    stall_timeout=self.policy.stall_timeout,
                    buffer_size=self.policy.chunk_size,
                )
            else:
                write = functools.partial(_disk_call, target, job_id, target.write)
                await self._stream_pieces(reply, write, counter)
        finally:
            counter.flush()

    async def _stream_pieces(
        self,
        reply: Body,
        write: Callable[[list[bytes]], int],
        counter: _Counter,
    ) -> None:
        """aiohttp's pieces, passed on as they came (no joining, no copy on the event loop), in
        batches of about `chunk_size` bytes: one thread hop per batch, strictly in order."""
        loop = asyncio.get_running_loop()
        chunk_size = self.policy.chunk_size
        in_flight: asyncio.Future[int] | None = None

        async def settle() -> None:
            nonlocal in_flight
            if in_flight is not None:
                # Shielded: a thread's write cannot be stopped, and a cancel here must not
                # orphan it (the `.part` would grow after the task ended, under a resume that
                # measured it): the `finally` below waits for it to land.
                written = await asyncio.shield(in_flight)
                in_flight = None
                counter.add(written)

        async def submit(batch: list[bytes], size: int) -> None:
            nonlocal in_flight
            await settle()
            if self._bucket is not None:
                await asyncio.sleep(self._bucket.reserve(size, time.monotonic()))
            in_flight = loop.run_in_executor(_WRITERS, write, batch)

        batch: list[bytes] = []
        size = 0
        try:
            while True:
                try:
                    data, end_of_http_chunk = await reply.read_piece()
                except (PollkitError, asyncio.CancelledError):
                    if batch:  # received in order: keep it, do not fetch it again
                        await submit(batch, size)
                    await settle()
                    raise
                if data:
                    batch.append(data)
                    size += len(data)
                    if size < chunk_size:
                        continue
                elif end_of_http_chunk:
                    continue  # a chunked body's chunk boundary, not its end
                if batch:
                    await submit(batch, size)
                    batch, size = [], 0
                if not data:
                    break
            await settle()
        finally:
            if in_flight is not None:
                # Leaving on an error: let the last write land before the file is closed.
                with contextlib.suppress(StorageError):
                    counter.add(await in_flight)


class _Counter:
    """Counts bytes written to `target` and reports them to its progress in batches."""

    def __init__(self, target: PartFile, total: int | None) -> None:
        self._target = target
        self._total = total
        self._pending = 0

    def add(self, written: int) -> None:
        self._target.written += written
        self._pending += written
        if self._pending >= _PROGRESS_BATCH:
            self.flush()

    def flush(self) -> None:
        target = self._target
        if self._pending:
            target.progress.advance_bytes(self._pending)
            self._pending = 0
        target.progress.file_progress(target.path.name, target.written, self._total)


def _disk_call(target: PartFile, job_id: str | None, func: Callable[..., _T], *args: Any) -> _T:
    """`func(*args)`, blocking work on `target`; a refusal of the disk is a `StorageError`."""
    try:
        return func(*args)
    except OSError as exc:
        raise StorageError(
            f"disk refused: {exc.strerror}", job_id=job_id, path=str(target.part)
        ) from exc


def _expired(output: Output) -> bool:
    return output.expires_at is not None and output.expires_at <= datetime.now(timezone.utc)


def names_for_urls(urls: Sequence[str]) -> list[str]:
    """A distinct, safe file name per URL: its last path segment, numbered when repeated.

    A URL without a usable last segment gets ``download-<hash>``, the same on every run, so
    an interrupted batch finds its `.part` files again.
    """
    names: list[str] = []
    taken: set[str] = set()
    for url in urls:
        base = url_basename(url)
        if not safe_name(base) or base.startswith("."):
            base = f"download-{hashlib.sha256(url.encode()).hexdigest()[:10]}"
        stem, suffix = os.path.splitext(base)
        name, n = base, 0
        while name in taken:
            n += 1
            name = f"{stem} ({n}){suffix}"
        taken.add(name)
        names.append(name)
    return names


async def fetch_urls(
    downloader: Downloader, urls: Sequence[str], directory: str | os.PathLike[str] | Destination
) -> list[SavedFile | PollkitError]:
    """Download plain URLs into `directory`, each under `names_for_urls`'s name.

    Returns:
        Per URL, in order, the saved file or the error that stopped it.
    """

    async def one(index: int, url: str, name: str) -> SavedFile | PollkitError:
        try:
            return await downloader.fetch(Output(url=url, index=index), directory, name=name)
        except PollkitError as exc:
            return exc

    names = names_for_urls(urls)
    directory = resolve_directory(directory, downloader.policy)
    return list(
        await asyncio.gather(
            *(one(i, u, n) for i, (u, n) in enumerate(zip(urls, names, strict=True)))
        )
    )
