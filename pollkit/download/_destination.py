"""Outputs delivered to an fsspec URL (``s3://…``, ``gs://…``, ``memory://…``) instead of a folder.

Bytes never go straight from the API to the store: they stream through the usual verified,
resumable downloader into a local *spool* folder (so a cut connection resumes from the spool,
and the sha256 is known before anything is written to the store), then the finished file is
put to the destination with create-only semantics, and only then reported (and recorded in a
batch's journal) with its final URL, size and sha256. The spooled copy is removed once the
store has it; a failed put keeps it, so a rerun uploads without downloading again.

What "create-only" guarantees depends on the store (fsspec's ``put_file(mode="create")``):

- S3 (s3fs): a conditional write (``If-None-Match: *``, on the single PUT or on the completion
  of a multipart upload): atomic, a concurrent writer cannot be overwritten. s3fs aborts a
  multipart upload whose parts or completion failed, so none is left open by a failure.
- Any other store: fsspec checks that nothing is there, then writes: a writer racing in
  between could be overwritten. ``memory://`` and most remote stores behave this way.
- ``file://…`` is not sent through fsspec at all: it is the local folder it names, with the
  local downloader's atomic rename.

An object already at the target is handled like a local file: the same bytes are kept (the
download counts as reused); other bytes follow `DownloadPolicy.existing` (``rename`` puts
``name (1).ext``, ``skip`` keeps the object and reports its bytes, ``overwrite`` replaces it).

fsspec is imported only here, and only when a URL is given: a plain path never loads it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pollkit.display._progress import ProgressSink
from pollkit.errors import ConfigurationError, StorageError
from pollkit.policies import DownloadPolicy

if TYPE_CHECKING:  # the downloader imports this module, not the other way round
    from pollkit.download._downloader import Downloader, Refresh, SavedFile
    from pollkit.models import Output

__all__ = ["Destination", "is_url", "redact_location", "resolve_directory"]

_log = logging.getLogger("pollkit.download.destination")

# A scheme of two characters or more (``C://`` is a Windows drive, not a protocol), or fsspec's
# chained form (``simplecache::s3://…``).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+(::[A-Za-z][A-Za-z0-9+.\-]+)*://")
_BLOCK = 1 << 20
# Puts block a thread each (fsspec's sync API); a pool of their own keeps them from crowding
# out the default executor that archive extraction and DNS use.
_PUTS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pollkit-put")

Directory = str | os.PathLike[str]


def is_url(location: object) -> bool:
    """Whether `location` is a URL (``scheme://…``) rather than a path; pure, imports nothing.

    Args:
        location: A download directory, or a path recorded in a journal.
    """
    return isinstance(location, str) and _URL.match(location) is not None


def redact_location(url: str) -> str:
    """`url` without user info or query string, which may carry credentials."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    head, sep, tail = rest.partition("/")
    if "@" in head:
        head = head.rpartition("@")[2]
    return f"{scheme}://{head}{sep}{tail}"


def resolve_directory(
    directory: Directory | Destination, policy: DownloadPolicy
) -> Path | Destination:
    """Where outputs go: a local folder (a plain path or ``file://``), or a `Destination`.

    Args:
        directory: The caller's ``download_directory``.
        policy: The download policy (spool folder, storage options).

    Raises:
        ConfigurationError: A URL whose protocol cannot be used (fsspec or its package missing,
            an unknown protocol).
    """
    if isinstance(directory, Destination):
        return directory
    if not is_url(directory):
        return Path(directory)
    assert isinstance(directory, str)
    parts = urlsplit(directory)
    if parts.scheme == "file" and "::" not in directory:
        if parts.netloc not in ("", "localhost"):
            shown = redact_location(directory)
            raise ConfigurationError(f"download_directory {shown!r}: not a local file URL")
        return Path(unquote(parts.path))
    return Destination(directory, policy)


def _default_spool() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pollkit" / "spool"


class Destination:
    """A download directory given as an fsspec URL: outputs are spooled, then put there.

    Args:
        url: The destination, e.g. ``s3://bucket/run/``.
        policy: The download policy: `DownloadPolicy.spool_directory` (where bytes wait
            before the put), `DownloadPolicy.storage_options` (given to the filesystem) and
            `DownloadPolicy.existing`.

    Raises:
        ConfigurationError: fsspec, or the protocol's package, is not installed, or the
            protocol is unknown.
    """

    def __init__(self, url: str, policy: DownloadPolicy) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_location(self.url)
        try:
            import fsspec
        except ImportError as exc:
            raise ConfigurationError(
                f"download_directory {self.shown!r} needs fsspec: pip install 'pollkit[fsspec]'"
            ) from exc
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **dict(policy.storage_options))
        except ImportError as exc:
            raise ConfigurationError(
                f"download_directory {self.shown!r}: its protocol's package is missing ({exc})"
            ) from exc
        except ValueError as exc:
            raise ConfigurationError(f"download_directory {self.shown!r}: {exc}") from exc
        self.root = self.root.rstrip("/")
        # One spool per destination: a rerun finds its unfinished puts, and a batch's default
        # journal (which must be local) lives there too.
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        base = policy.spool_directory or _default_spool()
        self.spool = Path(base) / key

    def __repr__(self) -> str:
        return f"Destination({self.shown!r})"

    def location(self, name: str) -> str:
        """The URL of the object `name` in this destination."""
        return f"{self.url}/{name}"

    async def fetch(
        self,
        downloader: Downloader,
        output: Output,
        *,
        job_id: str | None,
        kind: str | None,
        name: str | None,
        refresh: Refresh | None,
        progress: ProgressSink | None,
        fields: dict[str, str] | None,
    ) -> SavedFile:
        """Download `output` into the spool with `downloader`, then put it here.

        Returns:
            The delivered file: `SavedFile.destination` is its URL, `SavedFile.path` where it
            was spooled (removed once delivered).

        Raises:
            DownloadError: The download failed (the spooled bytes are kept for a resume).
            StorageError: The store refused the write (the URL is named; the spooled file is
                kept, so a rerun puts it without downloading again).
        """
        if downloader.policy.extract_archives and output.is_archive:
            raise ConfigurationError(
                f"extract_archives is not supported with an fsspec destination ({self.shown})"
            )
        file_name = name or downloader.target_name(output, job_id=job_id, kind=kind, fields=fields)
        sink = progress or downloader.progress
        spooled = await _spooler(downloader).fetch(
            output,
            self.spool,
            job_id=job_id,
            name=file_name,
            refresh=refresh,
            progress=sink,
        )
        loop = asyncio.get_running_loop()
        sink.add_bytes_total(spooled.size)

        def advance(count: int) -> None:  # called in fsspec's thread
            loop.call_soon_threadsafe(sink.advance_bytes, count)

        put = _Put(self, spooled.path, spooled.size, spooled.sha256, advance, job_id)
        final, size, sha256, kept = await loop.run_in_executor(
            _PUTS, put.run, file_name, downloader.policy.existing
        )
        if kept:  # nothing was uploaded: count the bytes the object already holds
            sink.advance_bytes(spooled.size)
        await loop.run_in_executor(_PUTS, _remove, spooled.path)
        _log.debug("delivered %s (%d bytes)", redact_location(self.location(final)), size)
        return replace(
            spooled,
            size=size,
            sha256=sha256,
            reused=kept,
            destination=self.location(final),
        )


def _spooler(downloader: Downloader) -> Downloader:
    """`downloader` writing to the spool: same connections, slots and bandwidth cap, but a
    leftover spool file with other bytes is simply replaced (the destination's policy
    applies at the destination, not in the spool), and archives are not extracted."""
    spool = copy.copy(downloader)
    spool.policy = downloader.policy.model_copy(
        update={"existing": "overwrite", "extract_archives": False}
    )
    return spool


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # the object is delivered; a leftover spool file is only space
        _log.warning("could not remove spooled %s: %s", path, exc.strerror)


def _numbered(name: str, n: int) -> str:
    stem, suffix = posixpath.splitext(name)
    return f"{stem} ({n}){suffix}" if n else name


@dataclass
class _Put:
    """One spooled file put to a destination under the existing-object policy (blocking)."""

    destination: Destination
    local: Path
    size: int
    sha256: str
    advance: Callable[[int], None]
    job_id: str | None

    def run(self, name: str, existing: str) -> tuple[str, int, str, bool]:
        """Put the file; return (name used, size, sha256, whether an object was kept)."""
        for n in range(10_000):
            candidate = _numbered(name, n)
            target = posixpath.join(self.destination.root, candidate)
            try:
                self._call(target, candidate, self._put, target, False)
                return candidate, self.size, self.sha256, False
            except FileExistsError:
                pass
            # Read back only when it can be the same file: a store keeps no sha256 of ours.
            size = self._call(target, candidate, self.destination.fs.size, target)
            digest = None
            if size == self.size:
                digest = self._call(target, candidate, self._digest, target)
                if digest == self.sha256:
                    _log.debug("%s already holds these bytes", candidate)
                    return candidate, self.size, self.sha256, True
            if existing == "skip":
                _log.warning("%s holds other bytes; kept it (existing='skip')", candidate)
                digest = digest or self._call(target, candidate, self._digest, target)
                return candidate, size, digest, True
            if existing == "overwrite":
                _log.info("%s holds other bytes; replacing it (existing='overwrite')", candidate)
                self._call(target, candidate, self._put, target, True)
                return candidate, self.size, self.sha256, False
            if n == 0:
                _log.info("%s holds other bytes; trying %s", candidate, _numbered(name, 1))
        raise StorageError(
            "no free object name", job_id=self.job_id, path=self.destination.location(name)
        )

    def _put(self, target: str, overwrite: bool) -> None:
        from fsspec.callbacks import Callback

        advance = self.advance

        class _Progress(Callback):  # type: ignore[misc]  # fsspec is untyped
            def call(self, *args: Any, **kwargs: Any) -> None:
                pass

            def relative_update(self, inc: int = 1) -> None:
                advance(inc)

        self.destination.fs.put_file(
            os.fspath(self.local),
            target,
            callback=_Progress(),
            mode="overwrite" if overwrite else "create",
        )

    def _digest(self, target: str) -> str:
        """The sha256 of the object at `target`, read back in blocks."""
        digest = hashlib.sha256()
        with self.destination.fs.open(target, "rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def _call(self, target: str, name: str, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)`; a refusal of the store is a `StorageError` naming the object's URL."""
        where = redact_location(self.destination.location(name))
        try:
            return func(*args)
        except FileExistsError:
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise StorageError(
                f"destination refused: {_clean(reason)}", job_id=self.job_id, path=where
            ) from exc
        except Exception as exc:  # a backend's own errors (botocore's, gcsfs's): any refusal
            raise StorageError(
                f"destination refused: {type(exc).__name__}: {_clean(str(exc))}",
                job_id=self.job_id,
                path=where,
            ) from exc


def _clean(message: str) -> str:
    """A backend's message on one line, any URL in it without credentials."""
    words = (redact_location(w) if "://" in w else w for w in message.split())
    return " ".join(words)[:300]
