"""The one place that sends HTTP requests.

It owns the `aiohttp.ClientSession` (or borrows the user's), applies timeouts, retries transient
failures with `backoff` under a `RetryPolicy`, maps every aiohttp and socket error to a pollkit
error (`_errors`), and logs each exchange at debug level with secrets redacted. What a reply's
body does once open is `_body.Body`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
import backoff

from pollkit import __version__
from pollkit.core.retry import is_retryable, retry_delays
from pollkit.errors import (
    ConfigurationError,
    PollkitError,
    ProtocolError,
)
from pollkit.policies import RetryPolicy
from pollkit.providers.base import Request, Response
from pollkit.transport._body import Body
from pollkit.transport._debug import debug_requested, enable_debug_logging
from pollkit.transport._errors import error_for_status, redact_url, transport_error

__all__ = ["Transport", "UploadProgress"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: Called with the number of bytes of a file part just read for sending.
UploadProgress = Callable[[int], None]

_log = logging.getLogger("pollkit.http")

USER_AGENT = f"pollkit/{__version__}"
# Downloads read 1 MiB at a time; aiohttp's 64 KiB costs ~40% (docs/design/downloads.md#chunk-size).
READ_BUFSIZE = 1 << 20


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _CountingReader(io.BufferedReader):
    """A file part's reader that reports each block aiohttp reads from it (in its thread)."""

    def __init__(self, path: str, on_read: UploadProgress | None) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data and self._on_read is not None:
            self._on_read(len(data))
        return data


@contextlib.contextmanager
def _form_data(request: Request, on_upload: UploadProgress | None) -> Iterator[aiohttp.FormData]:
    """The multipart body of `request`, with its files open (closed again on exit)."""
    form = aiohttp.FormData()
    files: list[_CountingReader] = []
    try:
        for part in request.form or ():
            if part.path is None:
                form.add_field(part.name, part.value or "", content_type=part.content_type)
                continue
            try:
                reader = _CountingReader(str(part.path), on_upload)
            except OSError as exc:
                raise ConfigurationError(
                    f"{request.operation}: cannot read {part.name} file {part.path}: {exc.strerror}"
                ) from exc
            files.append(reader)
            form.add_field(
                part.name,
                reader,
                filename=part.filename or part.path.name,
                content_type=part.content_type or "application/octet-stream",
            )
        yield form
    finally:
        for reader in files:
            reader.close()


class _SessionBox:
    """Holds the session a transport created, for the finalizer (which must not hold the
    transport itself)."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None


def _close_abandoned(box: _SessionBox) -> None:
    """Close the connections of a session whose client was dropped without being closed.

    Runs from the garbage collector, maybe outside any event loop, so it cannot await
    ``session.close()``; closing the connector's transports is the synchronous part of it and
    leaves aiohttp nothing to warn about ("Unclosed client session").
    """
    session = box.session
    if session is None or session.closed:
        return
    connector = session.connector
    close_now = getattr(connector, "_close", None)
    if close_now is not None:
        close_now()
        _log.debug("closed the connections of a client that was never closed")


class Transport:
    """Sends requests over one shared `aiohttp.ClientSession`.

    Args:
        retry: Default retry policy (a call may pass its own).
        timeout: Seconds to wait for a connection, and for each read, before `ReadTimeout`.
        max_connections: Total connections open at once (polls and downloads share them).
        max_connections_per_host: Connections to one host at once.
        session: A session of the caller's; used as it is and never closed by pollkit.
        secrets: Strings to scrub from error messages.
        logger: Where request and response lines go (default ``pollkit.http``); they are
            logged at DEBUG, with URLs stripped of their query and no headers.

    ``POLLKIT_DEBUG=1`` in the environment turns the ``pollkit`` loggers on (see
    `pollkit.transport._debug`).
    """

    def __init__(
        self,
        *,
        retry: RetryPolicy,
        timeout: float = 30.0,
        max_connections: int = 32,
        max_connections_per_host: int = 16,
        session: aiohttp.ClientSession | None = None,
        secrets: Iterable[str] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < timeout < math.inf:  # NaN too: it would disable every socket timeout
            raise ConfigurationError(f"timeout must be > 0 and finite, got {timeout!r}")
        if max_connections < 1 or max_connections_per_host < 1:
            raise ConfigurationError("connection limits must be ≥ 1")
        self.retry = retry
        self.timeout = timeout
        self._limits = (max_connections, max_connections_per_host)
        self._session = session
        self._owns_session = session is None
        self._secrets = tuple(s for s in secrets if s)
        # A client dropped without `aclose()` still closes the session it created.
        self._created = _SessionBox()
        weakref.finalize(self, _close_abandoned, self._created)
        self.log = logger or _log
        if debug_requested():
            enable_debug_logging()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running event loop."""
        if self._session is None:
            total, per_host = self._limits
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=total, limit_per_host=per_host),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout
                ),
                headers={"User-Agent": USER_AGENT},
                read_bufsize=READ_BUFSIZE,
            )
            self._created.session = self._session
        elif self._session.closed:
            raise ConfigurationError("the HTTP session is closed; create a new client")
        return self._session

    async def aclose(self) -> None:
        """Close the session if pollkit created it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def send(
        self,
        request: Request,
        *,
        retry: RetryPolicy | None = None,
        on_upload: UploadProgress | None = None,
        retry_if: Callable[[PollkitError], bool] | None = None,
    ) -> Response:
        """Send `request`, retrying transient failures; return the reply.

        Args:
            request: What to send.
            retry: The retry policy for this request (default: the transport's).
            on_upload: Told how many bytes of the form's files were read for sending (on a
                worker thread; a retry reads the files again from the start).
            retry_if: Which failures are retried, instead of the policy's statuses and
                connection errors (submits: `pollkit.core.retry.submit_fate`); the policy
                still sets the waits and the limits.

        Raises:
            APIError: The server answered 4xx/5xx (after retries for retryable ones).
            TransportError: No reply could be had (after retries).
        """
        attempt = self._retrying(request, retry or self.retry, self._send_once, retry_if)
        response: Response = await attempt(request, on_upload)
        return response

    async def open_stream(
        self,
        request: Request,
        *,
        media_type: str = "text/event-stream",
        retry: RetryPolicy | None = None,
    ) -> Body:
        """Send `request` and return the open response, to be read as a stream; the caller
        closes it. Only the initial response is retried (transient failures, as `send`).

        Raises:
            APIError: The server answered 4xx/5xx (after retries for retryable ones).
            ProtocolError: It answered something other than 200 with `media_type`.
            TransportError: No reply could be had (after retries).
        """
        attempt = self._retrying(request, retry or self.retry, self._open_once)
        raw: aiohttp.ClientResponse = await attempt(request, media_type)
        return Body(raw, operation=request.operation, job_id=request.job_id)

    @contextlib.asynccontextmanager
    async def download(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        stall_timeout: float,
        follow_redirects: bool,
        job_id: str | None,
    ) -> AsyncIterator[Body]:
        """``GET url`` for a download, once (the downloader decides what a retry resumes): the
        open response, whatever its status. An aiohttp or socket error in the request, or while
        the body is read inside the block, leaves it as pollkit's `TransportError`.

        Args:
            url: The file's URL.
            headers: The request's headers (range, credentials).
            stall_timeout: Seconds without a byte before `ReadTimeout`.
            follow_redirects: Whether to follow redirects (never with credentials: they would
                follow to another host).
            job_id: The job, for messages.

        Raises:
            TransportError: No reply, or the body broke off.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=stall_timeout
        )
        started = time.perf_counter()
        try:
            async with self.session.get(
                url, headers=dict(headers), timeout=timeout, allow_redirects=follow_redirects
            ) as raw:
                self.log.debug(
                    "GET %s%s -> %d in %.1f ms (download headers)",
                    redact_url(url),
                    f" ({headers['Range']})" if "Range" in headers else "",
                    raw.status,
                    (time.perf_counter() - started) * 1000,
                )
                yield Body(raw, operation="download", job_id=job_id)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(exc, operation="download", job_id=job_id, url=url) from exc

    def retrying(
        self,
        func: _F,
        policy: RetryPolicy,
        *,
        what: str,
        giveup: Callable[[Exception], bool] | None = None,
    ) -> _F:
        """`func` retried under `policy` (its delays, attempts and time budget), each failed
        attempt logged with `what` it was.

        Args:
            func: The coroutine function of one attempt.
            policy: The retry policy.
            what: Names the attempt in the log (``GET <url>``, without secrets).
            giveup: Whether an error is final (default: not `is_retryable` under `policy`).
        """

        def final(exc: Exception) -> bool:
            return not is_retryable(exc, policy)

        def on_backoff(details: Any) -> None:
            self.log.debug(
                "%s: attempt %d failed (%s), retrying in %.3f s",
                what,
                details["tries"],
                details.get("exception"),
                details["wait"],
            )

        wrapped: _F = backoff.on_exception(
            retry_delays,
            PollkitError,
            max_tries=policy.max_attempts,
            max_time=policy.max_elapsed,
            giveup=giveup or final,
            jitter=None,
            on_backoff=on_backoff,
            logger=None,
            policy=policy,
        )(func)
        return wrapped

    def _retrying(
        self,
        request: Request,
        policy: RetryPolicy,
        func: _F,
        retry_if: Callable[[PollkitError], bool] | None = None,
    ) -> _F:
        giveup = None
        if retry_if is not None:

            def giveup(exc: Exception) -> bool:
                return not (isinstance(exc, PollkitError) and retry_if(exc))

        what = f"{request.method} {redact_url(request.url)}"
        return self.retrying(func, policy, what=what, giveup=giveup)

    def _unsendable(self, request: Request, exc: Exception) -> ConfigurationError:
        """What aiohttp refusing to send `request` means: a header it will not write (a key
        pasted with its line break) or a body JSON cannot encode. Nothing was sent."""
        if any(_CONTROL.search(secret) for secret in self._secrets):
            reason = "the API key holds a line break or another control character"
        else:
            reason = str(exc)
            for secret in self._secrets:
                reason = reason.replace(secret, "[redacted]")
        return ConfigurationError(f"{request.operation}: cannot send the request: {reason}")

    async def _open_once(self, request: Request, media_type: str) -> aiohttp.ClientResponse:
        started = time.perf_counter()
        try:
            raw = await self.session.request(
                request.method,
                request.url,
                json=request.json_body,
                params=request.params,
                headers=dict(request.headers),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise transport_error(
                exc, operation=request.operation, job_id=request.job_id, url=request.url
            ) from exc
        except (ValueError, TypeError) as exc:
            raise self._unsendable(request, exc) from exc
        content_type = raw.headers.get("Content-Type", "")
        self.log.debug(
            "%s %s -> %d %s (stream opened) in %.1f ms",
            request.method,
            redact_url(request.url),
            raw.status,
            content_type,
            (time.perf_counter() - started) * 1000,
        )
        if raw.status == 200 and content_type.split(";")[0].strip() == media_type:
            return raw
        try:
            body = await raw.read()
        finally:
            raw.release()
        error = error_for_status(Response(raw.status, raw.headers, body, request), self._secrets)
        if error is not None:
            raise error
        raise ProtocolError(
            f"unexpected response (HTTP {raw.status}, {content_type or 'no content type'})",
            operation=request.operation,
            job_id=request.job_id,
        )

    async def _send_once(self, request: Request, on_upload: UploadProgress | None) -> Response:
        started = time.perf_counter()
        try:
            form = _form_data(request, on_upload) if request.form else contextlib.nullcontext()
            with form as data:
                response = await self._exchange(request, data)
        except PollkitError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.log.debug(
                "%s %s -> %s after %.1f ms",
                request.method,
                redact_url(request.url),
                type(exc).__name__,
                (time.perf_counter() - started) * 1000,
            )
            raise transport_error(
                exc, operation=request.operation, job_id=request.job_id, url=request.url
            ) from exc
        except (ValueError, TypeError) as exc:
            raise self._unsendable(request, exc) from exc
        self.log.debug(
            "%s %s -> %d (%d bytes) in %.1f ms",
            request.method,
            redact_url(request.url),
            response.status,
            len(response.body),
            (time.perf_counter() - started) * 1000,
        )
        error = error_for_status(response, self._secrets)
        if error is not None:
            raise error
        return response

    async def _exchange(self, request: Request, data: aiohttp.FormData | None) -> Response:
        async with self.session.request(
            request.method,
            request.url,
            json=request.json_body,
            data=data,
            params=request.params,
            headers=dict(request.headers),
            allow_redirects=False,
        ) as raw:
            return Response(
                status=raw.status, headers=raw.headers, body=await raw.read(), request=request
            )
