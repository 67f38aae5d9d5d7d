"""The bridge from blocking code to asyncio: an event loop on a daemon thread of its own.

The blocking `Client` and the `ThreadedSimulator` both run their async twin this way, so that
they work where the calling thread already runs a loop (a Jupyter cell), where ``asyncio.run``
would refuse. It imports nothing of pollkit's client or simulator, so both may use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

from pollkit.errors import ConfigurationError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread, until `stop`.

    Args:
        name: The thread's name (shown by debuggers and ``threading.enumerate``).
        owner: What runs on it, for the error of a call that would wait for itself.
    """

    def __init__(self, name: str, *, owner: str) -> None:
        self.owner = owner
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result in the calling thread.

        Interrupting the wait (Ctrl-C) cancels the coroutine too.

        Raises:
            ConfigurationError: Called from the loop's own thread, which would wait for itself.
        """
        if threading.current_thread() is self.thread:
            coro.close()
            raise ConfigurationError(f"{self.owner} cannot be called from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        """Yield what the async generator `stream` yields, each step run on the loop.

        Leaving the iteration early (``break``, an exception) closes `stream` on the loop.
        """

        async def step() -> T:
            return await stream.__anext__()

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            if self.loop.is_running():
                self.run(stream.aclose())

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end (idempotent)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)
