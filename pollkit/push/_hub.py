"""Push notifications: what a server pushed about a job, delivered to whoever waits for it.

A push source (`pollkit.StatusStream`, `pollkit.WebhookReceiver`) publishes each
`Notification` it receives into its `Notifications` hub; `Engine.wait` subscribes to the jobs it
waits for and stops polling while the hub is *live*. When the source drops (a stream that
broke), every waiter is woken at once, polls, and goes back to its cadence until the source is
live again, so a job is never lost with its notification.

A hub is *trusted* when its source is authenticated (a status stream pollkit connects to with
the key): a notification's body is then the job's state. An untrusted hub (a webhook endpoint
anyone who learns its URL could post to) carries hints only: the waiting engine reads the job
from the API, through `Notifications.read_once` so that one job has at most one such read in
flight, and only that reply changes the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from pollkit._aio import wait_event
from pollkit.providers.base import Notification
from pollkit.transport._http import Transport

__all__ = ["Notifications", "PushSource", "Subscription"]

_log = logging.getLogger("pollkit.push")

_T = TypeVar("_T")

# Jobs submitted while the source was live and not yet waited for: a bound, so that a client
# that submits without ever waiting keeps no more than this (a forgotten job is just polled).
_MAX_EXPECTED = 100_000
# Notifications kept per such job until its wait subscribes (a vendor sends a handful).
_MAX_EARLY = 16


class Subscription:
    """The notifications of one job, in the order they arrived."""

    def __init__(self, hub: Notifications, job_id: str, *, expected: bool = False) -> None:
        self.job_id = job_id
        #: The job was submitted by this client while the source was live, and the source has
        #: not dropped since: every notification about it reaches this subscription.
        self.expected = expected
        self._hub = hub
        self._items: deque[Notification] = deque()
        self._wake = asyncio.Event()

    @property
    def live(self) -> bool:
        """Whether the hub's source currently delivers."""
        return self._hub.live

    @property
    def trusted(self) -> bool:
        """Whether a notification's body may stand for the job's state (else: a hint)."""
        return self._hub.trusted

    @property
    def hub(self) -> Notifications:
        """The hub this subscription belongs to."""
        return self._hub

    def _put(self, item: Notification | None) -> None:
        if item is not None:
            self._items.append(item)
        self._wake.set()

    def drain(self) -> int:
        """Drop the notifications waiting here (a read of the job about to start covers
        them); how many there were."""
        count = len(self._items)
        self._items.clear()
        return count

    async def next(self, timeout: float) -> Notification | None:
        """The next notification, or None when `timeout` seconds pass first or the source
        drops (the caller should poll then)."""
        if not self._items:
            self._wake.clear()
            await wait_event(self._wake, timeout)
        return self._items.popleft() if self._items else None


class Notifications:
    """Routes notifications to the waits subscribed to their job.

    Notifications about a job nobody waits for are dropped (the wait that starts later polls
    once first, so it sees the state they carried), except for a job this client submitted
    while the source was live (`expect`): its last few notifications are kept for the wait to
    come, which then need not poll first.

    Args:
        trusted: Whether the source is authenticated, so that a body is the job's state;
            False makes every notification a hint that the job should be read from the API.

    Attributes:
        live: Whether the source currently delivers (a connected stream, a serving webhook
            endpoint). Waits stretch their polls only while it is.
        trusted: As given.
        received: Notifications published so far.
    """

    def __init__(self, *, trusted: bool = True) -> None:
        self.live = False
        self.trusted = trusted
        self.received = 0
        self._subscribers: dict[str, list[Subscription]] = {}
        self._expected: OrderedDict[str, deque[Notification]] = OrderedDict()
        self._reads: dict[str, asyncio.Future[Any]] = {}

    def expect(self, job_id: str) -> None:
        """Note that this client just submitted `job_id` (while live, else nothing happens)."""
        if not self.live:
            return
        self._expected[job_id] = deque(maxlen=_MAX_EARLY)
        if len(self._expected) > _MAX_EXPECTED:
            self._expected.popitem(last=False)

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Receive the notifications about `job_id` for the duration of a ``with`` block."""
        expected = self.live and job_id in self._expected
        subscription = Subscription(self, job_id, expected=expected)
        for early in self._expected.pop(job_id, ()):
            subscription._put(early)
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
        waiting = self._subscribers.get(notification.job_id, ())
        for subscription in waiting:
            subscription._put(notification)
        kept = None if waiting else self._expected.get(notification.job_id)
        if kept is not None:
            kept.append(notification)  # for the wait to come

    async def read_once(self, job_id: str, read: Callable[[], Awaitable[_T]]) -> _T:
        """Run `read` for `job_id`, or join the one already in flight for that job, so that
        many hints (or many waits on one job) cost one request at a time.

        Raises:
            Exception: What `read` raised (every joined caller gets it).
        """
        running = self._reads.get(job_id)
        if running is None:
            running = asyncio.ensure_future(read())
            self._reads[job_id] = running

            def done(finished: asyncio.Future[Any]) -> None:
                self._reads.pop(job_id, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved: a read whose waiters left logs nothing

            running.add_done_callback(done)
        # A waiter that is cancelled leaves the read to the others.
        return cast(_T, await asyncio.shield(running))

    def set_live(self, live: bool) -> None:
        """Tell the hub whether its source delivers; going down wakes every wait so it polls."""
        if live == self.live:
            return
        self.live = live
        _log.debug("push source %s", "live" if live else "down: waits fall back to polling")
        if not live:
            # A notification may be lost while down: the jobs submitted before must poll first.
            self._expected.clear()
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
