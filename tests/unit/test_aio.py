"""`wait_event`: an event wait with a timeout that never loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from pollkit._aio import wait_event


async def test_set_timeout_and_already_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 10) is True
    assert await wait_event(event, 0) is True


async def test_a_cancellation_that_arrives_with_the_event_is_not_lost() -> None:
    event = asyncio.Event()
    waiting = asyncio.ensure_future(wait_event(event, 10))
    for _ in range(3):
        await asyncio.sleep(0)  # the wait is under way
    event.set()
    await asyncio.sleep(0)  # the inner wait completes as the cancellation comes
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
