"""asyncio helpers shared by the client and the simulator."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; return whether it was set.

    Not ``asyncio.wait_for(event.wait(), timeout)``: before Python 3.12, wait_for loses a
    cancellation that arrives as the event is set, and a loop around it then waits forever
    in a task that was told to stop (a ``pollkit run`` that never exits after Ctrl-C).
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
