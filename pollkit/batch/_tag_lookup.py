"""Finding the jobs of ambiguous submits by their tags, many tags per list request.

A batch whose submits met a burst of 502s may have dozens of specs to look up at once; each
asking for the whole job list on its own would cost a list request apiece, every interval.
Tags asked for in the same turn of the event loop share one request instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pollkit.policies import RetryPolicy

if TYPE_CHECKING:  # the client hands its engine in: batch never imports the client
    from pollkit.client._engine import Engine

__all__ = ["TagLookup"]


class TagLookup:
    """Answers `find` for many tags with one `Engine.find_tagged` request per round.

    Args:
        engine: Sends the list request.
        retry: The retry policy of the list request.
        spawn: Starts a round as a task its owner tracks (and cancels when it stops).
    """

    def __init__(
        self,
        engine: Engine,
        retry: RetryPolicy,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
    ) -> None:
        self._engine = engine
        self._retry = retry
        self._spawn = spawn
        self._next: dict[str, list[asyncio.Future[list[str]]]] | None = None

    async def find(self, tag: str) -> list[str]:
        """The ids of the jobs listed with `tag` now (empty: none).

        Raises:
            PollkitError: The list request failed (after its retries).
        """
        if self._next is None:
            self._next = {}
            self._spawn(self._round(self._next))
        waiter: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._next.setdefault(tag, []).append(waiter)
        return await waiter

    async def _round(self, waiting: dict[str, list[asyncio.Future[list[str]]]]) -> None:
        await asyncio.sleep(0)  # let the tags asked for in this turn join the round
        self._next = None  # later tags start the next round
        try:
            found = await self._engine.find_tagged(list(waiting), retry=self._retry)
        except Exception as exc:  # handed to every waiter: the round itself must not fail
            for waiters in waiting.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            return
        for tag, waiters in waiting.items():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(list(found.get(tag, [])))
