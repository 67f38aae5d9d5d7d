"""Push: follow a flux0-style run over its server-sent-event stream (docs/apis/flux0.md#status-map).

`stream_run` is the thin I/O shell around `pollkit.providers.flux0.RunTracker`: it opens the
``create_event`` stream with the client's HTTP session (retrying the initial response like any
other request), feeds the bytes to the tracker, closes the stream itself on an ``error`` or
``cancelled`` status or an invalid block, and reads the final message back with
``list_events`` when the server ends the stream. A stream that drops counts as complete only if
the final message is stored; otherwise the run is an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone

from pollkit.client._async import AsyncClient
from pollkit.errors import ConfigurationError, PollkitError, TransportError
from pollkit.models import JobState, Status
from pollkit.policies import RetryPolicy
from pollkit.providers.flux0 import Flux0, RunTracker
from pollkit.transport._body import Body
from pollkit.transport._errors import redact_url

__all__ = ["stream_run"]

_log = logging.getLogger("pollkit.push")

StateSink = Callable[[JobState], None]


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _follow(tracker: RunTracker, raw: Body, emit: StateSink) -> BaseException | None:
    """Feed the stream to `tracker` until it ends; return the error that dropped it, if any."""
    emit(tracker.state)
    try:
        async for chunk in raw.iter_chunks():
            for state in tracker.feed(chunk, _now()):
                emit(state)
            if tracker.state.is_terminal:
                return None  # error, cancelled or an invalid block: close the stream ourselves
    except TransportError as exc:
        return exc.__cause__ or exc
    finally:
        raw.close()
    tracker.closed(_now())
    return None


async def _confirm(client: AsyncClient, tracker: RunTracker, dropped: BaseException | None) -> None:
    provider = tracker.provider
    if tracker.state.is_terminal and tracker.state.status is not Status.COMPLETE:
        return
    if not tracker.correlation_id:
        tracker.failed(_now(), "the stream ended before naming its run")
        return
    try:
        reply = await client.send(provider.final_message_request(tracker.job_id))
    except PollkitError as exc:
        tracker.failed(_now(), f"final message not read: {exc}")
        return
    if dropped is not None:
        if provider.find_message(reply) is None:
            tracker.failed(_now(), f"stream dropped: {type(dropped).__name__}")
            return
        tracker.closed(_now())
    tracker.confirm(reply, _now())


async def stream_run(
    client: AsyncClient,
    session_id: str,
    content: str,
    *,
    timeout: float | None = None,
    on_state: StateSink | None = None,
    retry: RetryPolicy | None = None,
) -> JobState:
    """Post a user message to a flux0 session and follow the run until it ends.

    Args:
        client: A client of a `Flux0` provider; its session, retry policy and error mapping
            are used.
        session_id: The session to post to.
        content: The user's message.
        timeout: Seconds to follow the stream before giving up; the run is then `canceled`
            with reason "client aborted" (None: until the stream ends or the client's read
            timeout passes with no byte).
        on_state: Told every new state: `queued` when the stream opens, `rendering` on every
            status and chunk (with the text so far in ``raw["text"]``), and the terminal one.
        retry: Retry policy for the initial response (default: the client's).

    Returns:
        The terminal state. On `complete`, ``raw["text"]`` is the final message's text and
        ``raw["message"]`` the stored event (a `pollkit.models.Output` cannot hold inline
        content, so a run has no outputs).

    Raises:
        ConfigurationError: The client's provider is not `Flux0`, or the content is empty.
        APIError: The POST was answered 4xx/5xx (after retries), e.g. `InvalidRequest` (400)
            for an unknown session.
        TransportError: No stream could be opened (after retries), or it was not ``200
            text/event-stream``.
    """
    provider = client.provider
    if not isinstance(provider, Flux0):
        raise ConfigurationError("stream_run needs a client of the Flux0 provider")
    request = provider.create_event_request(session_id, content)
    raw = await client.open_stream(request, retry=retry)
    tracker = RunTracker(provider, session_id, _now())
    emit = _deduplicated(on_state)
    try:
        dropped = await asyncio.wait_for(_follow(tracker, raw, emit), timeout)
    except asyncio.TimeoutError:
        _log.debug("flux0 run on %s: timed out", redact_url(request.url))
        return _emit_last(tracker.aborted(_now()), emit)
    if isinstance(dropped, asyncio.TimeoutError):  # the read timeout: no byte for too long
        return _emit_last(tracker.aborted(_now(), "client aborted: read timeout"), emit)
    await _confirm(client, tracker, dropped)
    return _emit_last(tracker.state, emit)


def _deduplicated(on_state: StateSink | None) -> StateSink:
    """`on_state`, skipping a state just reported (the terminal one comes twice otherwise)."""
    last: list[JobState] = []

    def emit(state: JobState) -> None:
        if on_state is not None and not (last and last[0] is state):
            last[:] = [state]
            on_state(state)

    return emit


def _emit_last(state: JobState, emit: StateSink) -> JobState:
    emit(state)
    return state
