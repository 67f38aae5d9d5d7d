"""The submits of a batch: sent once, retried only when nothing was created, and told apart
from those that may have created a job (see `SubmitPolicy`).

Each request, with the journal rows around it, runs in a task of its own that the batch shields
from its own cancellation: when the batch stops (a refused key, Ctrl-C, an error), a request on
the wire still gets its answer, up to the transport's timeout, and that answer is recorded. A
submit whose fate stays unknown (500, 502, 504, a reset after sending) is looked up by the tag it
carried where the API can tell (`TagLookup`), and reported `AmbiguousSubmit` where it cannot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pollkit.batch._tag_lookup import TagLookup
from pollkit.batch.journal._protocol import Journal
from pollkit.core.ratelimit import TokenBucket
from pollkit.core.retry import retry_delays, submit_fate
from pollkit.errors import AmbiguousSubmit, AuthenticationError, PollkitError
from pollkit.models import Event
from pollkit.policies import Cadence, RetryPolicy
from pollkit.providers.base import Provider, Submission

if TYPE_CHECKING:  # the client hands its engine in: batch never imports the client
    from pollkit.client._engine import Engine
    from pollkit.push._hub import Notifications

__all__ = ["SubmitHost", "Submitter"]

_log = logging.getLogger("pollkit.scheduler")
_T = TypeVar("_T")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SubmitHost(Protocol):
    """What `Submitter` needs of the batch it serves (the `Scheduler`)."""

    engine: Engine
    provider: Provider
    journal: Journal | None
    cadence: Cadence
    rng: random.Random
    push: Notifications | None
    _bucket: TokenBucket | None

    async def _respect_pause(self) -> None: ...

    def _pause_all(self, error: BaseException) -> None: ...

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]: ...

    def _emit(self, event: Event) -> None: ...

    def _fail_unsubmitted(
        self, key: str, error: BaseException, code: str | None = None
    ) -> None: ...

    def _first_delay(self, kind: str | None) -> float: ...

    def _track(
        self,
        key: str,
        job_id: str,
        kind: str | None,
        submitted_at: datetime | None,
        *,
        fresh: bool,
        due: float,
    ) -> None: ...


class Submitter:
    """Submits the specs of one batch.

    Args:
        host: The batch: its journal, pauses, events and job tracking.
        lookup_retry: The retry policy of tag lookups (the batch's poll policy).
    """

    def __init__(self, host: SubmitHost, *, lookup_retry: RetryPolicy) -> None:
        self.host = host
        self.policy = host.engine.submit_policy
        self.retry = host.engine.transport.retry
        # One attempt per request: `submit` retries, so that between attempts it knows the
        # last one created nothing, and a batch that stops can say so.
        self._one_attempt = self.retry.model_copy(update={"max_attempts": 1})
        self._lookup = TagLookup(host.engine, lookup_retry, host._spawn)
        # Submit requests on the wire, with the journal writes around them.
        self._sending: set[asyncio.Task[Any]] = set()
        #: Set when the batch stops: a request not yet sent is then not sent at all.
        self.stopping = False

    async def drain(self) -> None:
        """Let the submits on the wire finish and record their answers (the batch stopped)."""
        if not self._sending:
            return
        bound = self.host.engine.transport.timeout + 5.0
        _log.info("waiting up to %.0f s for %d submits in flight", bound, len(self._sending))
        done, late = await asyncio.wait(set(self._sending), timeout=bound)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                # The batch is already stopping for a reason of its own: this one is logged.
                _log.warning("a submit failed while the batch stopped: %s", task.exception())
        for task in late:
            task.cancel()  # its fate is unknown: its row stays `submitting`, ambiguous later
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            _log.warning("%d submits got no answer before the batch stopped", len(late))

    async def submit(self, key: str, spec: Mapping[str, Any], *, again: bool) -> None:
        """Submit `spec`, retrying what created nothing (see `SubmitPolicy`), then track it."""
        policy = self.retry
        waits = retry_delays(policy, self.host.rng)
        next(waits)
        attempts, started = 0, time.monotonic()
        while True:
            await self.host._respect_pause()
            if self.host._bucket is not None:
                await asyncio.sleep(self.host._bucket.reserve(1, time.monotonic()))
            # Shielded: cancelling this coroutine (the batch stops) must not cut a request on
            # the wire, whose answer is the only way to know whether its job exists.
            sending = asyncio.ensure_future(self._send(key, spec, again=again))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
            fate, outcome = await asyncio.shield(sending)
            if isinstance(outcome, Submission):
                break
            again = True
            if fate == "not_taken":
                self.host._pause_all(outcome)  # the server said so: hold every request a while
                continue
            if fate == "unsent":
                attempts += 1
                delay = waits.send(outcome)
                out_of_time = (
                    policy.max_elapsed is not None
                    and time.monotonic() + delay - started > policy.max_elapsed
                )
                if (policy.max_attempts is not None and attempts >= policy.max_attempts) or (
                    out_of_time
                ):
                    self.host._fail_unsubmitted(key, outcome)  # nothing was created: a rerun sends
                    return
                _log.debug("spec %s: submit never sent (%s); again in %.2f s", key, outcome, delay)
                await asyncio.sleep(delay)
                continue
            if fate == "ambiguous":
                await self.resolve(key, spec, str(outcome))
                return
            if isinstance(outcome, AuthenticationError):
                raise outcome  # no other request of the batch can succeed either
            self.host._fail_unsubmitted(key, outcome)  # refused: nothing was created
            return
        self.host._emit(Event("submitted", key, outcome.job_id))
        first = self.host._first_delay(outcome.kind)
        self.host._track(
            key, outcome.job_id, outcome.kind, outcome.submitted_at, fresh=True, due=first
        )

    async def _send(
        self, key: str, spec: Mapping[str, Any], *, again: bool
    ) -> tuple[str, Submission | PollkitError]:
        """One submit request with its journal rows: the row first, the answer after.

        Returns ``("created", submission)`` or the failure's `submit_fate` and its error.
        """
        if self.host.journal is not None:
            # Written after the waits, just before the request: a batch stopped while
            # waiting leaves no row that looks like a submit in flight.
            if again:
                await self.host.journal.retry_submit(key)
            else:
                await self.host.journal.begin_submit(key, self.host.provider.name, dict(spec))
        if self.stopping:
            stopped = PollkitError(f"spec {key}: not sent: the batch stopped first")
            if self.host.journal is not None:
                await self.host.journal.record_submit_failed(key, str(stopped))
            return "unsent", stopped
        try:
            submission = await self.host.engine.submit(
                spec, retry=self._one_attempt, tag=self.tag(key, spec)
            )
        except PollkitError as exc:
            fate = submit_fate(exc, self.policy)
            if self.host.journal is not None:
                if fate == "ambiguous":
                    await self.host.journal.mark_ambiguous(key)
                else:
                    await self.host.journal.record_submit_failed(key, str(exc))
            return fate, exc
        if self.host.push is not None:
            # Its notifications, even those before the batch watches it, reach the batch.
            self.host.push.expect(submission.job_id)
        if self.host.journal is not None:
            await self.host.journal.record_submitted(
                key,
                submission.job_id,
                submission.kind,
                submission.submitted_at,
            )
        return "created", submission

    def tag(self, key: str, spec: Mapping[str, Any]) -> str | None:
        """The tag this spec's submits carry, when its job can be looked up by it."""
        if not self.policy.look_up:
            return None
        return self.host.provider.submit_tag(spec, key)

    def fail_ambiguous(self, key: str, reason: str, *, looked_up: bool = False) -> None:
        error = AmbiguousSubmit(
            key=key, provider=self.host.provider.name, reason=reason, can_look_up=looked_up
        )
        self.host._fail_unsubmitted(key, error, code="ambiguous_submit")

    async def resolve(self, key: str, spec: Mapping[str, Any], reason: str) -> None:
        """An ambiguous submit: find its job by its tag, or learn that it was never created."""
        tag = self.tag(key, spec)
        if tag is None:
            self.fail_ambiguous(key, reason)
            return
        window = self.policy.lookup_window
        deadline = None if window is None else time.monotonic() + window
        interval = min(max(self.host.cadence.initial, 0.05), 5.0)
        listed = False  # whether one lookup answered
        while True:
            try:
                found = await self._lookup.find(tag)
            except AuthenticationError:
                raise
            except PollkitError as exc:
                _log.info("spec %s: looking up its tag failed: %s", key, exc)
                found = None
            if found is not None:
                listed = True
                if len(found) == 1:
                    await self._adopt_found(key, found[0])
                    return
                if len(found) > 1:
                    self.fail_ambiguous(key, f"{len(found)} jobs carry its tag", looked_up=True)
                    return
                if self.host.provider.lists_new_jobs:
                    break  # listed at once, and not there: never created
            if deadline is None or time.monotonic() >= deadline:
                if listed and deadline is not None:
                    break  # not listed for the whole window: taken as never created
                self.fail_ambiguous(key, f"{reason}; its tag was not found", looked_up=True)
                return
            await asyncio.sleep(interval)
        _log.info("spec %s: no job carries its tag; submitting it again", key)
        await self.submit(key, spec, again=True)

    async def _adopt_found(self, key: str, job_id: str) -> None:
        _log.info("spec %s: its ambiguous submit created job %s", key, job_id)
        if self.host.journal is not None:
            await self.host.journal.record_submitted(key, job_id, None, _now())
        self.host._emit(Event("submitted", key, job_id))
        self.host._track(key, job_id, None, None, fresh=False, due=0.0)
