"""`Body`: an open response whose body is still to be read, the only view of an aiohttp
response outside the transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import aiohttp

from pollkit.errors import PollkitError
from pollkit.transport import _bodysink as bodysink
from pollkit.transport._errors import transport_error

__all__ = ["Body"]


class Body:
    """An open response whose body is still to be read: the only view of an aiohttp response
    outside this module. Reading it raises pollkit's errors, never aiohttp's.

    Args:
        raw: The aiohttp response.
        operation: What the request was for, in messages.
        job_id: The job, in messages.
    """

    __slots__ = ("_job_id", "_operation", "_raw")

    def __init__(self, raw: aiohttp.ClientResponse, *, operation: str, job_id: str | None) -> None:
        self._raw = raw
        self._operation = operation
        self._job_id = job_id

    @property
    def status(self) -> int:
        """The HTTP status."""
        return self._raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (case-insensitive)."""
        return self._raw.headers

    @property
    def content_length(self) -> int | None:
        """The body's length in this reply, when the server said."""
        return self._raw.content_length

    @property
    def url(self) -> str:
        """The URL that answered (after redirects)."""
        return str(self._raw.url)

    def _error(self, exc: BaseException) -> PollkitError:
        return transport_error(exc, operation=self._operation, job_id=self._job_id, url=self.url)

    async def read(self) -> bytes:
        """The whole (rest of the) body.

        Raises:
            TransportError: The connection broke or stalled.
        """
        try:
            return await self._raw.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(exc) from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive.

        Raises:
            TransportError: The connection broke or stalled.
        """
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(exc) from exc

    async def read_piece(self) -> tuple[bytes, bool]:
        """The next piece of the body as received, and whether it ends an HTTP chunk (``b""``
        with False: the end of the body).

        Raises:
            TransportError: The connection broke or stalled.
        """
        try:
            return await self._raw.content.readchunk()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(exc) from exc

    def can_take_over(self) -> bool:
        """Whether `receive_into` can take the rest of the body off the socket."""
        return bodysink.can_take_over(self._raw)

    async def receive_into(
        self,
        stages: Sequence[bodysink.Stage],
        *,
        on_written: Callable[[int], None],
        stall_timeout: float,
        buffer_size: int,
    ) -> None:
        """Receive the rest of the body straight into reusable buffers passed through
        `stages` (see `pollkit.transport._bodysink`), then close the connection.

        Raises:
            Exception: Whatever a stage raised.
            TransportError: The connection broke or stalled.
        """
        try:
            await bodysink.receive(
                self._raw,
                stages,
                on_written=on_written,
                stall_timeout=stall_timeout,
                buffer_size=buffer_size,
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Close the connection (what was not read is dropped)."""
        self._raw.close()
