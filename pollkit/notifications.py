"""Push notifications: what a server pushed about a job, delivered to whoever waits for it.

A push source (`pollkit.StatusStream`, `pollkit.WebhookReceiver`) publishes each
`Notification` it receives into its `Notifications` hub; `Engine.wait` subscribes to the jobs it
waits for and stops polling while the hub is *live*. When the source drops (a stream that
broke), every waiter is woken at once, polls, and goes back to its cadence until the source is
live again, so a job is never lost with its notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from pollkit._aio import wait_event
from pollkit.http import Transport
from pollkit.providers.base import Notification

__all__ = ["Notifications", "PushSource", "Subscription"]

_log = logging.getLogger("pollkit.push")


class Subscription:
    """The notifications of one job, in the order they arrived."""

    def __init__(self, hub: Notifications, job_id: str) -> None:
        self.job_id = job_id
        self._hub = hub
        self._items: deque[Notification] = deque()
        self._wake = asyncio.Event()

    @property
    def live(self) -> bool:
        """Whether the hub's source currently delivers."""
        return self._hub.live

    def _put(self, item: Notification | None) -> None:
        if item is not None:
            self._items.append(item)
        self._wake.set()

    async def next(self, timeout: float) -> Notification | None:
        """The next notification, or None when `timeout` seconds pass first or the source
        drops (the caller should poll then)."""
        if not self._items:
            self._wake.clear()
            await wait_event(self._wake, timeout)
        return self._items.popleft() if self._items else None


class Notifications:
    """Routes notifications to the waits subscribed to their job.

    Notifications about a job nobody waits for are dropped: the wait that starts later polls
    once first, so it sees the state they carried.

    Attributes:
        live: Whether the source currently delivers (a connected stream, a serving webhook
            endpoint). Waits stretch their polls only while it is.
    """

    def __init__(self) -> None:
        self.live = False
        self.received = 0
        self._subscribers: dict[str, list[Subscription]] = {}

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Receive the notifications about `job_id` for the duration of a ``with`` block."""
        subscription = Subscription(self, job_id)
        self._subscribers.setdefault(job_id, []).append(subscription)
        try:
            yield subscription
        finally:
            waiting = self._subscribers[job_id]
            waiting.remove(subscription)
            if not waiting:
                del self._subscribers[job_id]

    def publish(self, notification: Notification) -> None:
        """Deliver `notification` to the waits on its job (called by push sources)."""
        self.received += 1
        for subscription in self._subscribers.get(notification.job_id, ()):
            subscription._put(notification)

    def set_live(self, live: bool) -> None:
        """Tell the hub whether its source delivers; going down wakes every wait so it polls."""
        if live == self.live:
            return
        self.live = live
        _log.debug("push source %s", "live" if live else "down: waits fall back to polling")
        if not live:
            for waiting in self._subscribers.values():
                for subscription in waiting:
                    subscription._put(None)


@runtime_checkable
class PushSource(Protocol):
    """Something that receives a server's notifications and publishes them in a hub.

    `AsyncClient(push=...)` starts it with the client and closes it with the client.
    """

    notifications: Notifications

    async def start(self, transport: Transport) -> None:
        """Begin receiving (connect, or start serving); `transport` is the client's, for
        sources that make requests."""

    async def aclose(self) -> None:
        """Stop receiving and release what `start` took."""
