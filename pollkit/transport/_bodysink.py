"""The body of a large download, received straight into reusable buffers.

aiohttp hands a body out as a new `bytes` object per socket read, each allocated, filled by one
copy and freed again, and every piece goes through its stream reader on the event loop. On a
large file that bookkeeping, not the network, is what limits a 2-core machine (the profiles are
in benchmarks/README.md). So once aiohttp has sent the request and read the status line and
headers (redirects, proxies, TLS, credentials and the connection limits all stay aiohttp's), a
body of known length is taken over: the connection's transport is switched to a
`asyncio.BufferedProtocol` that has the kernel copy bytes into a few preallocated buffers. Each
full buffer then goes through stages (append to the file, then hash), each in a thread of its
own that hands the buffer straight to the next (`_Stages`), each strictly in order, so one
buffer is hashed while the next is written and a third fills.
When every buffer is waiting for the disk, reading pauses: memory stays at
``buffers × buffer_size`` however fast the network is.

The connection is closed afterwards rather than returned to aiohttp's pool (its parser never saw
the body), which is why only large bodies are taken over: one more connection costs nothing next
to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["BodySink", "can_take_over", "receive"]

_log = logging.getLogger("pollkit.download")

#: One step every received buffer goes through, in order, in a thread of its own (write, hash).
Stage = Callable[[memoryview], object]


def can_take_over(reply: aiohttp.ClientResponse) -> bool:
    """Whether the rest of `reply`'s body can be received by a `BodySink`: a plain body of known
    length on a transport that can switch protocols."""
    headers = reply.headers
    if reply.content_length is None or "Transfer-Encoding" in headers:
        return False
    if headers.get("Content-Encoding", "identity").lower() != "identity":
        return False  # aiohttp would have decoded it; the sink cannot
    connection = reply.connection
    transport = connection.transport if connection is not None else None
    return transport is not None and hasattr(transport, "set_protocol")


class BodySink(asyncio.BufferedProtocol):
    """Receives `remaining` bytes into `buffers` buffers of `buffer_size` and passes each
    through `stages`, each stage in a thread of its own (`_Stages`): every stage sees every
    buffer in order, a buffer reaches stage n+1 once stage n is done with it, and `on_written`
    counts it after the last.

    `finished` resolves once nothing more will arrive and every stage is done with what was
    received: the body is complete, the peer closed early (the caller sees the shortfall), or
    something failed (the future's exception: the transport's error, a `TimeoutError` after
    `stall_timeout` seconds without a byte, or the exception of a stage, after which no stage
    starts anything new).
    """

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        remaining: int,
        stages: Sequence[Stage],
        *,
        on_written: Callable[[int], None],
        stall_timeout: float,
        buffer_size: int,
        buffers: int = 3,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: Any = transport
        self._remaining = remaining
        self.stages = tuple(stages)
        self._lane = _lane(len(self.stages))
        self._on_written = on_written
        self._stall_timeout = stall_timeout
        self._buffer_size = buffer_size
        self._free = [bytearray(buffer_size) for _ in range(buffers)]
        self._current: bytearray | None = self._free.pop()
        self._filled = 0
        self._seq = 0  # items handed to the stages
        self._in_flight = 0  # of those, not back yet
        #: Set by a stage thread: the first item a stage failed on (later ones are dropped).
        self.failed_at: int | None = None
        self._receiving = True
        self._paused = False  # by us, waiting for a free buffer
        self._error: BaseException | None = None
        self._stage_failed = False
        self.finished: asyncio.Future[None] = self._loop.create_future()
        self._last_byte = self._loop.time()
        self._watchdog = self._loop.call_later(stall_timeout, self._check_stall)
        self.previous: Any = None  # aiohttp's protocol, told when the connection is lost

    def start(self, head: bytes, previous: Any) -> None:
        """Write `head` (the body's bytes read before the switch) first, then take the
        transport over from `previous`, aiohttp's protocol."""
        if head:
            self._queue(memoryview(head), None)
        transport = self._transport
        if transport.is_closing():
            # Gone before the switch: aiohttp heard of it, and the caller finds the shortfall.
            self._stop_receiving(None)
            return
        if previous is not None:
            previous.pause_reading()  # which also stops its read timer: it will hear nothing
        self.previous = previous
        transport.set_protocol(self)
        if self._remaining <= 0:
            self._stop_receiving(None)
        else:
            transport.resume_reading()

    # --- asyncio.BufferedProtocol -----------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._current is None:
            # A transport may read once more after being paused (TLS): take one more buffer.
            self._current = bytearray(self._buffer_size)
            self._filled = 0
        view = memoryview(self._current)[self._filled :]
        # Never past the body: whatever follows it is not ours (nor, legally, anything).
        return view[: max(self._remaining, 1)] if self._remaining < len(view) else view

    def buffer_updated(self, nbytes: int) -> None:
        if not self._receiving:
            return  # read after the end (a server sending more than it announced): dropped
        self._filled += nbytes
        self._remaining -= nbytes
        self._last_byte = self._loop.time()
        assert self._current is not None
        if self._remaining <= 0 or self._filled == len(self._current):
            self._hand_over()
        if self._remaining <= 0:
            self._stop_receiving(None)

    def eof_received(self) -> bool:
        self._stop_receiving(None)  # early EOF: the caller finds the bytes missing
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_receiving(exc)
        if self.previous is not None:
            # aiohttp's protocol still waits to hear that its connection is gone.
            with contextlib.suppress(Exception):
                self.previous.connection_lost(exc)
            self.previous = None

    # --- receiving --------------------------------------------------------------------------

    def abort(self, error: BaseException | None = None) -> None:
        """Stop receiving and drop the connection (bytes already received are still written)."""
        self._stop_receiving(error)
        self._transport.abort()

    def _stop_receiving(self, error: BaseException | None) -> None:
        if not self._receiving:
            return
        self._receiving = False
        self._watchdog.cancel()
        if self._current is not None and self._filled:
            self._hand_over()  # what was received is kept: a retry resumes after it
        if error is not None and self._error is None:
            self._error = error
        if not self._transport.is_closing():
            self._transport.pause_reading()
        self._settle()

    def _hand_over(self) -> None:
        """Queue the current buffer for writing and move on to a free one (or pause)."""
        assert self._current is not None
        self._queue(memoryview(self._current)[: self._filled], self._current)
        self._current, self._filled = None, 0
        if self._free:
            self._current = self._free.pop()
        elif self._receiving and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _check_stall(self) -> None:
        now = self._loop.time()
        if self._paused:
            self._last_byte = now  # waiting for our own disk is not the peer stalling
        elif now - self._last_byte >= self._stall_timeout:
            _log.debug("no bytes for %.1f s; dropping the connection", now - self._last_byte)
            self.abort(TimeoutError(f"no bytes for {self._stall_timeout:g} s"))
            return
        self._watchdog = self._loop.call_at(
            self._last_byte + self._stall_timeout, self._check_stall
        )

    # --- writing ---------------------------------------------------------------------------

    def report(self, item: _Item, error: BaseException | None, done: bool) -> None:
        """From a stage thread: `item` is through (see `_passed`)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._passed, item, error, done)

    def _queue(self, view: memoryview, owner: bytearray | None) -> None:
        """Send received bytes down the stages (each in its own thread, see `_Stages`)."""
        self._in_flight += 1
        self._seq += 1
        self._lane.put(_Item(self, self._seq, view, owner))

    def _passed(self, item: _Item, error: BaseException | None, done: bool) -> None:
        """Back on the loop: `item` went through every stage (`done`), failed in one, or was
        dropped because an earlier item had failed."""
        try:
            self._in_flight -= 1
            if done:
                self._on_written(len(item.view))
            if error is not None and not self._stage_failed:
                # The disk refused: nothing later starts; what is under way finishes (and counts).
                self._stage_failed = True
                self._error = error  # the disk's refusal outranks what it caused
                if self._receiving:
                    self.abort()
            if item.owner is not None:
                self._recycle(item.owner)
            self._settle()
        except BaseException as exc:  # a bug here must fail the download, not hang it
            if not self.finished.done():
                self.finished.set_exception(exc)
            raise

    def _recycle(self, buffer: bytearray) -> None:
        if self._current is None and self._receiving:
            self._current, self._filled = buffer, 0
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
        else:
            self._free.append(buffer)

    def _settle(self) -> None:
        """Resolve `finished` once nothing more will arrive and no stage has work left."""
        if self._receiving or self._in_flight or self.finished.done():
            return
        if self._error is not None:
            self.finished.set_exception(self._error)
        else:
            self.finished.set_result(None)


@dataclass(slots=True)
class _Item:
    """Received bytes on their way through a sink's stages; `seq` orders them within it."""

    sink: BodySink
    seq: int
    view: memoryview
    owner: bytearray | None  # the sink's buffer to recycle afterwards, None for other bytes


class _Stages:
    """One thread per stage, each taking items from its own queue in order and passing them
    straight to the next stage's: the event loop hands a buffer over once and hears back once,
    and is never on the path from one stage to the next (each such hop would leave the hashing
    thread, the slowest stage, idle while the loop got round to it).

    Shared by every sink: with one thread per stage, a stage sees each sink's items in the
    order they were received. An item whose sink failed at an earlier item is dropped, so a
    failed write never leaves a gap that later bytes are written after.
    """

    def __init__(self, depth: int) -> None:
        self._queues: list[queue.SimpleQueue[_Item]] = [queue.SimpleQueue() for _ in range(depth)]
        for stage in range(depth):
            threading.Thread(
                target=self._work, args=(stage,), name=f"pollkit-stage-{stage}", daemon=True
            ).start()

    def put(self, item: _Item) -> None:
        self._queues[0].put(item)

    def _work(self, stage: int) -> None:
        source = self._queues[stage]
        following = self._queues[stage + 1] if stage + 1 < len(self._queues) else None
        while True:
            item = source.get()
            sink = item.sink
            error: BaseException | None = None
            if sink.failed_at is not None and item.seq > sink.failed_at:
                sink.report(item, None, False)  # after a failed one: never written
                continue
            try:
                sink.stages[stage](item.view)
            except BaseException as exc:
                error = exc
                sink.failed_at = (
                    item.seq if sink.failed_at is None else min(sink.failed_at, item.seq)
                )
            if error is None and following is not None:
                following.put(item)
            else:
                sink.report(item, error, error is None)


_lanes: dict[int, _Stages] = {}
_lanes_lock = threading.Lock()
# A forked child has none of its parent's threads: it starts its own on first use.
os.register_at_fork(after_in_child=_lanes.clear)


def _lane(depth: int) -> _Stages:
    """The process's stage threads for sinks with `depth` stages, started on first use."""
    with _lanes_lock:
        lane = _lanes.get(depth)
        if lane is None:
            lane = _lanes[depth] = _Stages(depth)
        return lane


async def receive(
    reply: aiohttp.ClientResponse,
    stages: Sequence[Stage],
    *,
    on_written: Callable[[int], None],
    stall_timeout: float,
    buffer_size: int,
) -> None:
    """Receive the rest of `reply`'s body through a `BodySink` (see `can_take_over`), then
    close its connection.

    Raises:
        Exception: Whatever a stage raised (nothing was started after it).
        TimeoutError: No byte for `stall_timeout` seconds.
        OSError: The connection broke (what was received before went through every stage).
    """
    connection = reply.connection
    assert connection is not None
    assert connection.transport is not None
    assert reply.content_length is not None
    # What aiohttp has read already is written first; the sink takes the rest off the socket.
    head = reply.content.read_nowait()
    sink = BodySink(
        connection.transport,
        reply.content_length - len(head),
        stages,
        on_written=on_written,
        stall_timeout=stall_timeout,
        buffer_size=buffer_size,
    )
    sink.start(head, connection.protocol)
    try:
        await asyncio.shield(sink.finished)
    except asyncio.CancelledError:
        # Stop receiving, but let what was received reach the disk before the file closes.
        sink.abort()
        with contextlib.suppress(BaseException):
            await sink.finished
        raise
    finally:
        reply.close()  # aiohttp's parser never saw the body: the connection cannot be reused
