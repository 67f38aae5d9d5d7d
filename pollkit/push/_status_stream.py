"""`StatusStream`: job statuses pushed as server-sent events, with reconnection.

The stream is a ``GET`` answered ``200 text/event-stream``; each ``status`` event carries one
job's state as its status reply would show it::

    event: status
    id: 42
    data: {"job_id": "cm3…", "kind": "image", "body": {…the GET reply…}}

The simulator serves one per dialect (``sim.urls["events/<dialect>"]``), and a gateway of
yours can serve the same format. When the stream drops, waits fall back to polling at once,
and the stream reconnects with ``Last-Event-ID`` so the server can replay what was missed;
the ``retry`` field, when the server sends one, sets the reconnection delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from pollkit.core import jsonbody
from pollkit.core.cadence import capped_growth
from pollkit.core.sse import ServerSentEvent, SSEDecoder, reconnect_headers
from pollkit.errors import ConfigurationError, PollkitError, TransportError
from pollkit.policies import RetryPolicy
from pollkit.providers.base import Notification, Request
from pollkit.push._hub import Notifications
from pollkit.transport._body import Body
from pollkit.transport._errors import redact_url
from pollkit.transport._http import Transport

__all__ = ["StatusStream"]

_log = logging.getLogger("pollkit.push")

# Each connection attempt is tried once: reconnection has its own delays, below.
_ONE_ATTEMPT = RetryPolicy(max_attempts=1)


class StatusStream:
    """A push source that follows an SSE stream of job statuses.

    Args:
        url: The stream's URL (http or https).
        headers: Request headers, e.g. credentials (never logged).
        reconnect_delay: Seconds before reconnecting after a drop, when the server set no
            ``retry``; doubled after each failed attempt in a row, up to `max_reconnect_delay`.
        max_reconnect_delay: Longest wait between attempts, seconds.

    Attributes:
        notifications: The hub waits subscribe to; live while the stream is connected.
        connections: How many times the stream was (re)connected.

    Raises:
        ConfigurationError: The URL is not http(s) or a delay is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigurationError(f"status stream URL must be http(s)://…, got {url!r}")
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ConfigurationError(
                "reconnect delays must satisfy 0 < reconnect_delay <= max_reconnect_delay, got "
                f"{reconnect_delay!r} and {max_reconnect_delay!r}"
            )
        self.url = url
        self._headers = dict(headers or {})
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.notifications = Notifications()
        self.connections = 0
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()

    def __repr__(self) -> str:
        return f"StatusStream({redact_url(self.url)!r}, connections={self.connections})"

    async def start(self, transport: Transport) -> None:
        """Connect, returning once the first attempt succeeded or failed; after a failure,
        waits poll as usual while the stream keeps trying in the background."""
        if self._task is not None:
            return
        self._attempted = asyncio.Event()
        self._task = asyncio.create_task(self._follow(transport), name="pollkit-status-stream")
        attempted = asyncio.ensure_future(self._attempted.wait())
        try:
            await asyncio.wait({attempted, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            attempted.cancel()
        if not self.notifications.live:
            _log.warning("status stream %s not connected yet: polling", redact_url(self.url))

    async def aclose(self) -> None:
        """Stop following the stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.notifications.set_live(False)

    async def _follow(self, transport: Transport) -> None:
        decoder = SSEDecoder()
        failures = 0
        while True:
            headers = {**self._headers, **reconnect_headers(decoder.last_event_id)}
            request = Request("GET", self.url, "status stream", headers=headers)
            try:
                raw = await transport.open_stream(request, retry=_ONE_ATTEMPT)
            except PollkitError as exc:
                failures += 1
                self._attempted.set()
                _log.debug("status stream: connection failed (%s)", exc)
            else:
                failures = 0
                self.connections += 1
                self.notifications.set_live(True)
                self._attempted.set()
                reason = await self._read(raw, decoder)
                self.notifications.set_live(False)
                _log.debug("status stream %s dropped: %s", redact_url(self.url), reason)
                # A block cut off by the drop is discarded; the last id and retry stay.
                decoder = SSEDecoder(decoder.last_event_id, decoder.retry)
            base = decoder.retry / 1000 if decoder.retry is not None else self.reconnect_delay
            await asyncio.sleep(capped_growth(base, 2.0, failures, self.max_reconnect_delay))

    async def _read(self, raw: Body, decoder: SSEDecoder) -> str:
        """Publish the stream's events until it ends; say why it ended."""
        try:
            async for chunk in raw.iter_chunks():
                for event in decoder.feed(chunk):
                    self._publish(event)
        except TransportError as exc:
            return str(exc)
        finally:
            raw.close()
        return "the server ended it"

    def _publish(self, event: ServerSentEvent) -> None:
        if event.event != "status":
            return
        try:
            data = jsonbody.loads(event.data)
            job_id, kind, body = data["job_id"], data.get("kind"), data["body"]
            if not isinstance(job_id, str) or not isinstance(body, dict):
                raise TypeError("job_id must be a string and body an object")
            if kind is not None and not isinstance(kind, str):
                raise TypeError("kind must be a string")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            _log.warning("status stream: event %r ignored: %s", event.id, exc)
            return
        self.notifications.publish(Notification(job_id, kind, body))
