"""Streaming a job's outputs to disk.

Each output is streamed in 1 MiB chunks to ``<name>.part`` (hashed with sha256 in the same
thread call as the write, so the file is never read twice), checked against Content-Length, and
renamed atomically. A file already present under the target name is kept when its bytes are the
same, and never overwritten when they differ: the new file gets a free name instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import aiofiles.os
import backoff

from pollkit.core.retry import retry_delays
from pollkit.errors import (
    AuthenticationError,
    ChecksumMismatch,
    ConnectError,
    DownloadError,
    IncompleteDownload,
    PollkitError,
    ReadTimeout,
    ServerError,
    StorageError,
    UnsafePath,
    URLExpired,
)
from pollkit.http import Transport
from pollkit.models import JobState, Output
from pollkit.policies import RetryPolicy
from pollkit.progress import NullProgress, ProgressSink

__all__ = ["DEFAULT_NAME_TEMPLATE", "SavedFile", "download_outputs", "render_name"]

_log = logging.getLogger("pollkit.download")

DEFAULT_NAME_TEMPLATE = "{job_id}-{index}{ext}"
CHUNK_SIZE = 1 << 20
# Writes go to a small dedicated pool: a slow disk write must never stall the event loop, and
# two threads were never worse than the default pool in DOWNLOADS.md's measurements.
_WRITERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pollkit-write")


@dataclass(frozen=True, slots=True)
class SavedFile:
    """One output on disk.

    Attributes:
        path: Where it is.
        size: Its size in bytes.
        sha256: Hex digest of its bytes.
        reused: True when an identical file was already there and was kept.
    """

    path: Path
    size: int
    sha256: str
    reused: bool = False


def render_name(template: str, *, job_id: str, output: Output, content_type: str | None) -> str:
    """The file name for `output` under `template` (fields: job_id, index, name, ext).

    Raises:
        UnsafePath: The result is empty or contains a path separator.
        DownloadError: The template names an unknown field.
    """
    suggested = output.name or _url_basename(output.url) or ""
    stem, ext = posixpath.splitext(suggested)
    if not ext and content_type:
        ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    try:
        name = template.format(job_id=job_id, index=output.index, name=stem or "output", ext=ext)
    except (KeyError, IndexError, ValueError) as exc:
        raise DownloadError(f"bad name template {template!r}: {exc}", job_id=job_id) from exc
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UnsafePath(f"unsafe file name {name!r}", job_id=job_id)
    return name


def _url_basename(url: str | None) -> str | None:
    if not url:
        return None
    return posixpath.basename(unquote(urlsplit(url).path)) or None


def _write_and_hash(handle: IO[bytes], digest: Any, chunk: bytes) -> None:
    handle.write(chunk)
    digest.update(chunk)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_file(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and _sha256_of(path) == sha256


def _finalize(part: Path, target: Path, size: int, sha256: str) -> tuple[Path, bool]:
    """Move `part` into place and return where it went, and whether an identical file was kept.

    Never overwrites a different file: ``name.ext`` is taken, then ``name (1).ext``, and so on,
    and a candidate holding the same bytes is reused (so a rerun adds nothing).
    """
    for n in range(10_000):
        candidate = target if n == 0 else target.with_name(f"{target.stem} ({n}){target.suffix}")
        if not candidate.exists():
            if n:
                _log.info("%s holds other content; saving as %s", target.name, candidate.name)
            os.replace(part, candidate)
            return candidate, False
        if _same_file(candidate, size, sha256):
            part.unlink()
            return candidate, True
    raise StorageError("no free file name", path=str(target))


async def _fetch_once(
    transport: Transport,
    output: Output,
    directory: Path,
    *,
    job_id: str,
    template: str,
    progress: ProgressSink,
) -> SavedFile:
    assert output.url is not None
    loop = asyncio.get_running_loop()
    try:
        async with transport.stream(output.url, operation="download", job_id=job_id) as reply:
            name = render_name(
                template, job_id=job_id, output=output, content_type=reply.content_type
            )
            target = directory / name
            part = target.with_name(target.name + ".part")
            expected = reply.content_length
            if expected is not None:
                progress.add_bytes_total(expected)
            digest = hashlib.sha256()
            received = 0
            try:
                handle = await loop.run_in_executor(_WRITERS, part.open, "wb")
            except OSError as exc:
                raise StorageError(f"cannot write: {exc.strerror}", path=str(part)) from exc
            try:
                async for chunk in reply.content.iter_chunked(CHUNK_SIZE):
                    try:
                        await loop.run_in_executor(_WRITERS, _write_and_hash, handle, digest, chunk)
                    except OSError as exc:
                        raise StorageError(
                            f"write failed: {exc.strerror}", job_id=job_id, path=str(part)
                        ) from exc
                    received += len(chunk)
                    progress.advance_bytes(len(chunk))
            finally:
                await loop.run_in_executor(_WRITERS, handle.close)
    except AuthenticationError as exc:
        raise URLExpired(
            f"URL refused with HTTP {exc.status_code} (expired?)", job_id=job_id, url=output.url
        ) from exc
    if expected is not None and received != expected:
        raise IncompleteDownload(
            f"got {received} of {expected} bytes", job_id=job_id, url=output.url, path=str(part)
        )
    sha256 = digest.hexdigest()
    if output.sha256 and output.sha256.lower() != sha256:
        raise ChecksumMismatch(
            f"sha256 {sha256} differs from the announced {output.sha256}",
            job_id=job_id,
            url=output.url,
            path=str(part),
        )
    try:
        path, reused = await loop.run_in_executor(
            _WRITERS, _finalize, part, target, received, sha256
        )
    except OSError as exc:
        raise StorageError(f"cannot finish file: {exc.strerror}", path=str(target)) from exc
    _log.debug("job %s output %d -> %s (%d bytes)", job_id, output.index, path, received)
    return SavedFile(path=path, size=received, sha256=sha256, reused=reused)


def _retryable_download(error: Exception) -> bool:
    return isinstance(error, (ConnectError, ReadTimeout, ServerError, IncompleteDownload))


async def download_output(
    transport: Transport,
    output: Output,
    directory: Path,
    *,
    job_id: str,
    template: str = DEFAULT_NAME_TEMPLATE,
    progress: ProgressSink | None = None,
    retry: RetryPolicy | None = None,
) -> SavedFile:
    """Download one output into `directory`, retrying transient failures from the start.

    Raises:
        DownloadError: The file could not be saved (a subclass says why).
        APIError: The server refused the download for a reason other than expiry.
    """
    if output.url is None:
        raise DownloadError(f"output {output.index} has no URL", job_id=job_id)
    policy = retry or transport.retry
    fetch = backoff.on_exception(
        retry_delays,
        PollkitError,
        max_tries=policy.max_attempts,
        max_time=policy.max_elapsed,
        giveup=lambda exc: not _retryable_download(exc),
        jitter=None,
        logger="pollkit.download",
        backoff_log_level=logging.DEBUG,
        policy=policy,
    )(_fetch_once)
    saved: SavedFile = await fetch(
        transport,
        output,
        directory,
        job_id=job_id,
        template=template,
        progress=progress or NullProgress(),
    )
    return saved


async def download_outputs(
    transport: Transport,
    state: JobState,
    directory: str | os.PathLike[str],
    *,
    template: str = DEFAULT_NAME_TEMPLATE,
    progress: ProgressSink | None = None,
    retry: RetryPolicy | None = None,
) -> Sequence[SavedFile]:
    """Download every output of `state` into `directory` (created if missing), concurrently.

    Returns:
        One `SavedFile` per output, in output order.

    Raises:
        StorageError: `directory` cannot be created or is not a directory.
        DownloadError: An output could not be saved (the others are still attempted).
    """
    folder = Path(directory)
    try:
        await aiofiles.os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot use download directory: {exc.strerror}", job_id=state.job_id, path=str(folder)
        ) from exc
    results = await asyncio.gather(
        *(
            download_output(
                transport,
                output,
                folder,
                job_id=state.job_id,
                template=template,
                progress=progress,
                retry=retry,
            )
            for output in state.outputs
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, SavedFile)]
