"""The engine: submits jobs, polls them on a cadence, hands finished ones to the downloader.

Today it drives one wait per call; the batch scheduler (one heap of next-poll times for
thousands of jobs) will grow here, behind the same methods.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pollkit.core.cadence import PollHints, next_poll_delay
from pollkit.core.learning import schedule_delay
from pollkit.core.retry import parse_retry_after, submit_fate
from pollkit.core.schedule import PollSchedule
from pollkit.errors import APIError, AuthenticationError, NotFound, PollkitError, PollTimeout
from pollkit.models import JobState, Status
from pollkit.policies import Cadence, RetryPolicy, SubmitPolicy
from pollkit.providers.base import Provider, Request, Response, Submission
from pollkit.push._hub import Notifications, Subscription
from pollkit.transport._http import Transport, UploadProgress

__all__ = ["Engine", "Watch"]

StateCallback = Callable[[JobState], None]

_log = logging.getLogger("pollkit.engine")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class _Timing:
    """A wait's learned poll ages, and the job's age when the wait began (None: unknown)."""

    schedule: PollSchedule | None
    age: float | None


@dataclass(frozen=True, slots=True)
class Watch:
    """The end of a wait: the last state and how many polls it took (notifications that
    stood in for polls are not counted)."""

    state: JobState
    polls: int


class Engine:
    """Drives one provider's jobs over one transport.

    Args:
        provider: The API.
        transport: Sends the requests.
        rng: Source of jitter (seed it for reproducible schedules).
        clock: Monotonic seconds; injectable so the cadence can be tested without waiting.
        submit_policy: Which failed submits are sent again (default `SubmitPolicy()`).
    """

    def __init__(
        self,
        provider: Provider,
        transport: Transport,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        submit_policy: SubmitPolicy | None = None,
    ) -> None:
        self.provider = provider
        self.transport = transport
        self.submit_policy = submit_policy or SubmitPolicy()
        self._rng = rng or random.Random()
        self._clock = clock
        self._started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Send the provider's start-up request (a key check) once; later calls return at once.

        Raises:
            AuthenticationError: The server refused it.
        """
        if self._started:
            return
        async with self._starting:
            if self._started:
                return
            request = self.provider.startup_request()
            if request is not None:
                try:
                    await self.transport.send(request)
                except APIError as exc:
                    # A server that is down (5xx, or 429 after the retries) says nothing of the
                    # key: that error is raised as it is, and the next call checks again.
                    transient = exc.status_code >= 500 or exc.status_code == 429
                    if isinstance(exc, AuthenticationError) or transient:
                        raise
                    raise AuthenticationError(
                        status_code=exc.status_code,
                        server_message=exc.server_message or "the API key was refused",
                        body=exc.body,
                        headers=exc.headers,
                        operation=request.operation,
                    ) from exc
            self._started = True

    async def submit(
        self,
        spec: Mapping[str, Any],
        *,
        retry: RetryPolicy | None = None,
        on_upload: UploadProgress | None = None,
        tag: str | None = None,
    ) -> Submission:
        """Create a job.

        Only failures that prove no job was created are retried (`submit_policy`: a request
        that never left, a 429 or a 503), with the waits and limits of `retry` (default: the
        transport's); a 500, 502, 504 or a broken connection may hide a job that was created
        (and paid for) and is raised. `on_upload` is told the bytes of files sent with the
        spec; `tag` is set in the request where the API has a field for it
        (`Provider.tagged`).
        """
        if tag is not None:
            spec = self.provider.tagged(spec, tag)
        request = self.provider.submit_request(spec)
        await self.start()
        policy = self.submit_policy

        def retryable(error: PollkitError) -> bool:
            return submit_fate(error, policy) in ("unsent", "not_taken")

        response = await self.transport.send(
            request, retry=retry, on_upload=on_upload, retry_if=retryable
        )
        return self.provider.parse_submission(response, _utcnow())

    async def find_tagged(
        self, tags: Collection[str], *, retry: RetryPolicy | None = None
    ) -> dict[str, list[str]]:
        """For each of `tags`, the ids of the jobs the API lists with it (one list request).

        Raises:
            UnsupportedOperation: The API cannot list jobs by a tag.
        """
        await self.start()
        response = await self.transport.send(self.provider.tag_lookup_request(), retry=retry)
        return self.provider.find_tagged(response, tags)

    async def first_found(
        self, requests: Sequence[Request], retry: RetryPolicy | None = None
    ) -> Response:
        """Send each request in turn while the previous one answered 404."""
        await self.start()
        for request in requests[:-1]:
            try:
                return await self.transport.send(request, retry=retry)
            except NotFound:
                continue
        return await self.transport.send(requests[-1], retry=retry)

    async def observe(
        self,
        job_id: str,
        kind: str | None = None,
        previous: JobState | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> tuple[JobState, PollHints]:
        """Poll once: the job's state, and the timing hints of the reply."""
        requests = list(self.provider.status_requests(job_id, kind))
        response = await self.first_found(requests, retry)
        state = self.provider.parse_state(response, _utcnow(), previous)
        state = await self._with_outputs(state, retry)
        hints = PollHints(
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            eta_seconds=state.eta_seconds,
        )
        return state, hints

    async def observe_many(
        self,
        job_ids: list[str],
        previous: Mapping[str, JobState],
        *,
        retry: RetryPolicy | None = None,
    ) -> dict[str, JobState]:
        """Poll many jobs in one request (providers with a list endpoint only)."""
        request = self.provider.batch_status_request(job_ids)
        await self.start()
        response = await self.transport.send(request, retry=retry)
        states = self.provider.parse_batch_states(response, _utcnow(), previous)
        listed = await asyncio.gather(*(self._with_outputs(s, retry) for s in states.values()))
        return {state.job_id: state for state in listed}

    async def _with_outputs(self, state: JobState, retry: RetryPolicy | None) -> JobState:
        """A complete state with its outputs, for APIs that list them separately."""
        if state.status is not Status.COMPLETE or state.outputs:
            return state
        request = self.provider.outputs_request(state)
        if request is None:
            return state
        response = await self.transport.send(request, retry=retry)
        return self.provider.parse_outputs(response, state)

    async def wait(
        self,
        job_id: str,
        kind: str | None,
        *,
        cadence: Cadence,
        on_state: StateCallback | None = None,
        push: Notifications | None = None,
        schedule: PollSchedule | None = None,
        age: float | None = None,
    ) -> Watch:
        """Poll until the job is terminal.

        With a `schedule` (poll ages solved from the durations learned for jobs like this one,
        `pollkit.core.learning`), the job is polled at its ages instead of on the backoff, and
        past its end on the backoff capped at `Cadence.maximum`; with the job's `age` at the
        start (seconds since its submission) the first poll waits for the schedule too, else
        it is immediate and ages count from it.

        With `push`, notifications about the job replace polls: while the push source is
        live the job is polled only after `Cadence.push_window` seconds without one, and at
        once when the source drops, then on the cadence until it is live again. A job this
        client submitted while the source was live is not polled first: its notifications
        all reach the wait. From an untrusted source (a webhook receiver by default) a
        notification is only a hint: one that says the job ended makes the engine read the
        job at once, and that reply, not the notification, is the new state.

        Raises:
            PollTimeout: The cadence's deadline passed first (carries the last state).
            APIError, TransportError: A poll failed after its retries.
        """
        timing = _Timing(schedule, age)
        if push is None:
            return await self._wait(job_id, kind, cadence, on_state, None, timing)
        with push.subscribe(job_id) as subscription:
            return await self._wait(job_id, kind, cadence, on_state, subscription, timing)

    async def _wait(
        self,
        job_id: str,
        kind: str | None,
        cadence: Cadence,
        on_state: StateCallback | None,
        subscription: Subscription | None,
        timing: _Timing,
    ) -> Watch:
        started = self._clock()
        polls = 0
        hints = PollHints()
        state: JobState | None = None
        if timing.schedule is not None and timing.age is not None and subscription is None:
            # The job's age is known: its first poll is the schedule's next one, not now.
            first = schedule_delay(cadence, timing.schedule, age=timing.age, elapsed=0.0)
            if first:
                await asyncio.sleep(first)
        if subscription is not None and subscription.expected and subscription.live:
            # Submitted here while live: the first poll would only repeat what the submit
            # said, so the first notification (kept by the hub if it came early) stands in.
            window = cadence.push_window
            if cadence.timeout is not None:
                window = min(window, cadence.timeout)
            pushed = await self.next_pushed(subscription, window, None, kind)
            if pushed is not None:
                state, read_hints, reads = pushed
                polls += reads
                hints = read_hints or hints
        if state is None:
            state, hints = await self.observe(job_id, kind)
            polls += 1
        if on_state:
            on_state(state)
        while not state.is_terminal:
            elapsed = self._clock() - started
            if timing.schedule is not None:
                delay = schedule_delay(
                    cadence,
                    timing.schedule,
                    age=(timing.age or 0.0) + elapsed,
                    hints=hints,
                    rand=self._rng.random(),
                    elapsed=elapsed,
                )
            else:
                delay = next_poll_delay(
                    cadence,
                    polls=max(polls, 1),  # a notification may have stood in for the first poll
                    elapsed=elapsed,
                    hints=hints,
                    rand=self._rng.random(),
                )
            if delay is None:
                assert cadence.timeout is not None  # only a deadline stops the cadence
                raise PollTimeout(
                    job_id=job_id,
                    timeout=cadence.timeout,
                    state=state,
                    hint=self.provider.timeout_hint(state),
                )
            pushed = None
            if subscription is None:
                await asyncio.sleep(delay)
            else:
                if subscription.live:
                    remaining = math.inf if cadence.timeout is None else cadence.timeout - elapsed
                    delay = min(max(delay, cadence.push_window), max(remaining, 0.0))
                pushed = await self.next_pushed(subscription, delay, state, state.kind or kind)
            if pushed is not None:
                state, read_hints, reads = pushed
                polls += reads
                hints = read_hints or hints
            else:
                state, hints = await self.observe(job_id, state.kind or kind, previous=state)
                polls += 1
            if on_state:
                on_state(state)
        return Watch(state=state, polls=polls)

    async def next_pushed(
        self,
        subscription: Subscription,
        timeout: float,
        previous: JobState | None,
        kind: str | None,
    ) -> tuple[JobState, PollHints | None, int] | None:
        """The job's state after the next notification within `timeout`: the notification's
        own (trusted source), or the API's read at once (a hint that says the job ended).

        Returns:
            The state, the read's timing hints (None: no read), and the reads made (0 or
            1); None when `timeout` passes first or the source drops: poll instead.
        """
        deadline = self._clock() + timeout
        while True:
            notification = await subscription.next(max(deadline - self._clock(), 0.0))
            if notification is None:
                return None
            try:
                claimed = self.provider.notification_state(notification, _utcnow(), previous)
                if subscription.trusted:
                    return await self._with_outputs(claimed, None), None, 0
            except PollkitError as exc:
                job_id = subscription.job_id
                if subscription.trusted:
                    _log.warning("job %s: notification not understood, polling: %s", job_id, exc)
                    return None
                _log.warning("job %s: hint not understood, ignored: %s", job_id, exc)
                continue
            if not claimed.is_terminal:
                # A hint of progress: the API would tell no more than the cadence's next
                # poll, so it costs no request; only a claimed end is worth reading at once.
                continue
            # The read covers every hint queued until now: a burst costs one request.
            subscription.drain()
            job_id = subscription.job_id
            read = functools.partial(self.observe, job_id, claimed.kind or kind, previous)
            state, hints = await subscription.hub.read_once(job_id, read)
            if not state.is_terminal:
                _log.warning("job %s: a notification said it ended, the API did not", job_id)
            return state, hints, 1

    async def delete(self, job_id: str, kind: str | None = None) -> JobState | None:
        """Delete a job; its last state when the API's reply carries it."""
        response = await self.first_found(list(self.provider.delete_requests(job_id, kind)))
        return self.provider.parse_deleted(response, _utcnow())

    async def cancel(self, job_id: str, kind: str | None = None) -> None:
        """Cancel a job."""
        await self.start()
        await self.transport.send(self.provider.cancel_request(job_id, kind))
