"""Serving a download body the way real file servers do, and breaking it on purpose.

One function, `serve`, answers every download route (output files, blobs, archives): ``HEAD``,
``Range`` (206 and 416), ``If-Range``, validators, then the body in chunks. The same place
applies the scenario's download switches (no range support, validators that change on every
request, bandwidth) and body faults (truncate, reset or stall after about half the body), so
all three routes behave alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

from aiohttp import web

from pollkit.sim._faults import Fault

__all__ = [
    "MAX_CHUNK",
    "Delivery",
    "Entity",
    "RangeNotSatisfiable",
    "abort_connection",
    "bytes_entity",
    "content_disposition",
    "parse_range",
    "serve",
]

logger = logging.getLogger("pollkit.sim")

#: Largest write of a body: big enough for loopback throughput, small enough for flat memory.
MAX_CHUNK = 1024 * 1024

# A paced body is written in pieces of this many seconds' worth of bytes, so a slow download
# advances smoothly instead of in one burst per chunk.
_PACING_STEP = 0.05
# How long a ``reset_mid`` waits for the bytes before the cut to leave the process; a reset
# discards whatever is still queued, and a client that is not reading would hold us forever.
_FLUSH_TIMEOUT = 1.0


class RangeNotSatisfiable(Exception):
    """A ``Range`` header that asks only for bytes past the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Decode a single-range ``Range`` header.

    Syntactically invalid headers and multi-range requests are ignored (RFC 9110 lets a server
    answer them with the whole file), which this returns as None.

    Args:
        header: The header value, or None.
        size: Length of the file.

    Returns:
        ``(first, last)`` byte positions, inclusive, or None for "send everything".

    Raises:
        RangeNotSatisfiable: The range is valid but starts past the end of the file.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def _if_range_matches(value: str, etag: str, last_modified: str) -> bool:
    value = value.strip()
    if value.startswith('"'):
        return value == etag
    if value.startswith("W/"):
        return False  # weak validators never satisfy If-Range
    return value == last_modified


def content_disposition(filename: str) -> str:
    """An ``attachment`` disposition naming `filename` (RFC 6266).

    Args:
        filename: The name to suggest. Quotes and backslashes are escaped and control
            characters dropped; a non-ASCII name also gets a ``filename*`` in UTF-8, with
            ``_`` for those characters in the plain ``filename``.

    Returns:
        The header value.
    """
    printable = "".join(char for char in filename if char >= " " and char != "\x7f")
    plain = "".join(char if char.isascii() else "_" for char in printable)
    escaped = plain.replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{escaped}"'
    if plain != printable:
        value += f"; filename*=UTF-8''{quote(printable, safe='')}"
    return value


def abort_connection(request: web.Request) -> None:
    """Reset the request's connection (TCP RST), dropping anything not yet sent.

    Args:
        request: The request whose connection to reset.
    """
    # SO_LINGER 0 turns the close into a TCP reset, which clients see as a transport error.
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # The peer may already be gone; closing is all that matters then.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(frozen=True, slots=True)
class Entity:
    """A downloadable body and its metadata, readable by range without holding it whole.

    Attributes:
        size: Length in bytes.
        etag: Strong, quoted entity tag.
        modified_at: Unix time for ``Last-Modified``.
        media_type: ``Content-Type``.
        read: ``read(start, end)`` yields the bytes ``[start, end)`` in chunks.
        filename: Sent as ``Content-Disposition: attachment`` when set.
    """

    size: int
    etag: str
    modified_at: float
    media_type: str
    read: Callable[[int, int], Iterable[bytes | memoryview]]
    filename: str | None = None


def bytes_entity(
    data: bytes,
    *,
    etag: str,
    media_type: str,
    modified_at: float,
    filename: str | None = None,
    chunk_size: int = MAX_CHUNK,
) -> Entity:
    """An `Entity` over bytes in memory, read by range in slices (views, not copies).

    Args:
        data: The body.
        etag: Strong, quoted entity tag.
        media_type: ``Content-Type``.
        modified_at: Unix time for ``Last-Modified``.
        filename: For ``Content-Disposition``, if any.
        chunk_size: Largest slice.
    """
    view = memoryview(data)

    def read(start: int, end: int) -> Iterator[memoryview]:
        for position in range(start, end, chunk_size):
            yield view[position : min(position + chunk_size, end)]

    return Entity(
        size=len(data),
        etag=etag,
        modified_at=modified_at,
        media_type=media_type,
        read=read,
        filename=filename,
    )


def _no_fault() -> Fault | None:
    return None


def _ignore(_: object) -> None:
    return None


def _no_slowdown() -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one response is delivered: the scenario's switches and the hooks of the caller.

    Attributes:
        range_support: False ignores ``Range``/``If-Range`` and omits ``Accept-Ranges``.
        generation: When set, the validators change with it (``etag_changes``): the ETag gets
            ``-<generation>`` and ``Last-Modified`` moves `generation` seconds later.
        bandwidth: Bytes per real second, or None for as fast as the client reads.
        chunk_size: Largest single write.
        pick_fault: Called once, only when a body is about to be sent, for the fault to apply.
        pick_slowdown: Called once, only when a body is about to be sent: a bandwidth to pace
            this body at (the lower of it and `bandwidth` applies), or None.
        on_fault: Called with the fault when it takes effect.
        on_bytes: Called with the length of each body piece written.
    """

    range_support: bool = True
    generation: int | None = None
    bandwidth: float | None = None
    chunk_size: int = MAX_CHUNK
    pick_fault: Callable[[], Fault | None] = _no_fault
    pick_slowdown: Callable[[], float | None] = _no_slowdown
    on_fault: Callable[[Fault], None] = _ignore
    on_bytes: Callable[[int], None] = _ignore


def _validators(entity: Entity, generation: int | None) -> tuple[str, str]:
    if generation is None:
        return entity.etag, formatdate(entity.modified_at, usegmt=True)
    etag = f'{entity.etag[:-1]}-{generation}"'
    return etag, formatdate(entity.modified_at + generation, usegmt=True)


def _pieces(
    chunks: Iterable[bytes | memoryview], limit: int, cut: int
) -> Iterator[bytes | memoryview]:
    # Splits the source into writes of at most `limit` bytes, one of which starts exactly at
    # `cut`, so that a fault lands at a known byte.
    position = 0
    for chunk in chunks:
        size = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
        if size <= limit and not position < cut < position + size:
            yield chunk
            position += size
            continue
        view = memoryview(chunk).cast("B")
        offset = 0
        while offset < size:
            step = min(limit, size - offset)
            if position < cut < position + step:
                step = cut - position
            yield view[offset : offset + step]
            offset += step
            position += step


async def _flush(request: web.Request) -> None:
    # With a zero high-water mark the transport pauses the protocol until its buffer is
    # empty, and drain() waits for exactly that.
    transport = request.transport
    if transport is None:
        return
    transport.set_write_buffer_limits(high=0)
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(request.writer.drain(), _FLUSH_TIMEOUT)


async def _break(request: web.Request, fault: Fault) -> None:
    if fault.kind == "truncate":
        transport = request.transport
        if transport is not None:
            transport.close()  # sends what is buffered, then FIN: a clean but early end
        return
    await _flush(request)
    abort_connection(request)


async def _send_body(
    request: web.Request,
    response: web.StreamResponse,
    chunks: Iterable[bytes | memoryview],
    length: int,
    delivery: Delivery,
) -> bool:
    # Returns False when a fault ended the connection before the whole body was sent.
    fault = delivery.pick_fault()
    cut = length // 2 if fault is not None else -1
    bandwidth = delivery.bandwidth
    slow = delivery.pick_slowdown()
    if slow is not None:
        bandwidth = slow if bandwidth is None else min(bandwidth, slow)
    limit = delivery.chunk_size
    if bandwidth is not None:
        limit = max(1, min(limit, int(bandwidth * _PACING_STEP)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    for piece in _pieces(chunks, limit, cut):
        if sent == cut and fault is not None:
            if sent == 0:
                # Recent aiohttp holds the headers back until the first body byte; an empty
                # write sends them, so the client sees a response whose body breaks.
                await response.write(b"")
            delivery.on_fault(fault)
            logger.debug(
                "fault: %s after %d/%d bytes of %s", fault.kind, sent, length, request.path
            )
            if fault.kind != "stall":
                await _break(request, fault)
                return False
            await asyncio.sleep(fault.stall_seconds)
            started += fault.stall_seconds  # pacing resumes from here instead of bursting
        await response.write(piece)
        size = len(piece) if isinstance(piece, bytes) else piece.nbytes
        sent += size
        delivery.on_bytes(size)
        if bandwidth is not None:
            delay = started + sent / bandwidth - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    return True


async def serve(request: web.Request, entity: Entity, delivery: Delivery) -> web.StreamResponse:
    """Answer a GET or HEAD for `entity`, honouring ``Range`` and ``If-Range``.

    Args:
        request: The incoming request.
        entity: What to send.
        delivery: The scenario's switches and the caller's hooks.

    Returns:
        The finished response (200, 206 or 416); after a ``truncate`` or ``reset_mid`` fault
        its connection is already closed.
    """
    etag, last_modified = _validators(entity, delivery.generation)
    headers = {"ETag": etag, "Last-Modified": last_modified}
    if delivery.range_support:
        headers["Accept-Ranges"] = "bytes"
    if entity.filename is not None:
        headers["Content-Disposition"] = content_disposition(entity.filename)
    size = entity.size
    wanted = None
    if delivery.range_support:
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return web.json_response(
                {"message": "Range Not Satisfiable"}, status=416, headers=headers
            )
        if_range = request.headers.get("If-Range")
        if (
            wanted is not None
            and if_range is not None
            and not _if_range_matches(if_range, etag, last_modified)
        ):
            wanted = None  # the client's partial copy is stale: send the whole new file
    first, last = wanted if wanted is not None else (0, size - 1)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = entity.media_type
    length = last - first + 1
    response.content_length = length
    try:
        await response.prepare(request)
    except ConnectionError:
        # The client gave up before the headers went out (its read timeout, say).
        logger.debug("client left before %s %s was answered", request.method, request.path)
        return response
    if request.method == "HEAD" or length == 0:
        await response.write_eof()
        return response
    try:
        chunks = entity.read(first, last + 1)
        if await _send_body(request, response, chunks, length, delivery):
            await response.write_eof()
    except ConnectionError:
        # The client went away (gave up on a stall, say): nothing left to answer.
        logger.debug("client left during %s %s", request.method, request.path)
    return response
