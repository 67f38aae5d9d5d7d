"""`PostgresJournal`: a batch's journal in PostgreSQL, shared by the runners working it.

The same rows and life as the SQLite journal (`pollkit.batch.journal._records`), in tables
(`_pg_schema`) that any number of runners, on any machines, read and write at once. psycopg 3's
async driver and its pool (the ``postgres`` extra); no prepared statements, so it works behind
PgBouncer in transaction mode.

Each write is one conditional statement in autocommit (the allowed states, and the runner's
fence, in its ``WHERE``); only when it changes nothing does a second statement ask why, to
raise the same errors as SQLite (`KeyError`, `ConfigurationError`) or `ClaimLost`. So a job
costs a statement per event of its life, not per poll.

Shared by runners (`pollkit.batch._runner`): a row a runner claimed carries its ``owner`` and
a ``fence`` that every claim bumps. The runner's writes are conditioned on the fence it got:
once another runner has claimed the row, they match nothing and raise `ClaimLost` (counted in
`refused_writes`), so a runner that lost a job can never overwrite its new owner. While
`fences` is None (a journal of one process, and the contract tests) nothing is fenced.

A server that goes away (a restart, a failover) is waited for, up to `reconnect_timeout`:
every write is safe to repeat, since its ``WHERE`` finds it already done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pollkit.batch.journal._pg_schema import (
    ENTRY,
    PENDING,
    WITH_OUTPUTS,
    create_or_check,
    entry_of,
    redact_dsn,
)
from pollkit.batch.journal._protocol import ClaimLost
from pollkit.batch.journal._records import STATES, JournalEntry, canonical_json, check_states
from pollkit.errors import ConfigurationError, StorageError
from pollkit.models import Status

__all__ = ["PostgresJournal"]

_log = logging.getLogger("pollkit.journal")

_TERMINAL = (Status.COMPLETE.value, Status.ERROR.value, Status.CANCELED.value)


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC, as everywhere in pollkit.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _not_empty(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"journal: {name} must be a non-empty string, got {value!r}")


class PostgresJournal:
    """A batch's durable record in a PostgreSQL database (the `Journal` protocol).

    Open it with `open` (or ``async with``); the schema is created on first use.

    Args:
        dsn: A ``postgresql://`` URL or connection string. Never shown with its password.
        heartbeat: Seconds between a runner's heartbeats.
        lease: Seconds after its last heartbeat that a runner's claims lapse: other runners
            may then claim its jobs, and it submits nothing until it has renewed.
        capacity: Most unfinished jobs a runner holds at once.
        max_connections: Most connections the pool opens.
        reconnect_timeout: How long a statement waits for a server that went away before
            raising `StorageError`.

    Raises:
        ConfigurationError: An empty DSN, or not ``0 < heartbeat < lease``.

    Attributes:
        fences: The fence of every row this runner owns, or None when writes are not fenced
            (set by the runner).
        refused_writes: Writes that matched no row because another runner owns the job.
        statements: Statements sent to the server.
    """

    #: `AsyncClient.run` hands a shared journal's batch to a `Runner`.
    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        heartbeat: float = 10.0,
        lease: float = 30.0,
        capacity: int = 256,
        max_connections: int = 8,
        reconnect_timeout: float = 120.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigurationError("journal: a PostgreSQL DSN must be a non-empty string")
        if not 0 < heartbeat < lease:
            raise ConfigurationError(
                f"journal: need 0 < heartbeat < lease, got heartbeat={heartbeat}, lease={lease}"
            )
        if capacity < 1 or max_connections < 1:
            raise ConfigurationError(
                f"journal: capacity and max_connections must be ≥ 1, got {capacity},"
                f" {max_connections}"
            )
        self.heartbeat = heartbeat
        self.lease = lease
        self.capacity = capacity
        self.where = redact_dsn(dsn)
        self._dsn = dsn
        self.reconnect_timeout = reconnect_timeout
        self.fences: dict[str, int] | None = None
        self.refused_writes = 0
        self.statements = 0
        #: Keys this runner just claimed as ``pending``: `get` knows their answer (None)
        #: without asking, which saves a statement per job.
        self.fresh: set[str] = set()
        #: Awaited before a submit is begun (a runner waits there while its lease is lapsed).
        self.before_submit: Callable[[], Awaitable[None]] | None = None
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            open=False,
            # prepare_threshold=None: no server-side prepared statements, for PgBouncer.
            kwargs={"autocommit": True, "prepare_threshold": None},
            name="pollkit-journal",
        )
        self._open = False

    def __repr__(self) -> str:
        return f"PostgresJournal({self.where!r})"

    async def open(self) -> PostgresJournal:
        """Connect, and create the schema if the database has none.

        Returns:
            The journal itself.

        Raises:
            ConfigurationError: The database holds a journal of a newer pollkit, or a
                ``pollkit_schema`` table that is not a journal's.
            StorageError: The server cannot be reached (within `reconnect_timeout`).
        """
        try:
            # One plain connection first: a wrong address or password fails at once, where
            # the pool would keep trying in the background until its timeout.
            probe = await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=10)
            await probe.close()
            await self._pool.open(wait=True, timeout=self.reconnect_timeout)
        except psycopg.Error as exc:
            await self._pool.close()
            raise StorageError(
                f"cannot connect to the journal: {type(exc).__name__}",
                path=self.where,
                operation=None,
            ) from exc
        self._open = True
        try:
            await self._prepare()
        except BaseException:
            await self.aclose()
            raise
        _log.debug("journal %s open", self.where)
        return self

    async def __aenter__(self) -> PostgresJournal:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _prepare(self) -> None:
        async with self._pool.connection() as connection:
            await create_or_check(connection, self.where)

    async def aclose(self) -> None:
        """Close the pool. Idempotent."""
        self._open = False
        await self._pool.close()

    # --- statements ------------------------------------------------------------------------

    async def execute(
        self,
        operation: str,
        sql: str,
        params: Sequence[Any] = (),
        *,
        repeats: list[float] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit); its rows (none for a statement without any).

        A lost connection is retried until `reconnect_timeout`: every statement pollkit
        sends finds in its ``WHERE`` whether it was already done. Each time it is sent
        again, the seconds waited are appended to `repeats` (the first may have committed).

        Raises:
            StorageError: The server refused it, or stayed away too long.
        """
        if not self._open:
            raise ConfigurationError(f"journal {self.where} is not open ({operation})")
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                async with self._pool.connection() as connection:
                    self.statements += 1
                    cursor = await connection.execute(sql, params)
                    return list(await cursor.fetchall()) if cursor.description else []
            except psycopg.OperationalError as exc:
                waited = time.monotonic() - started
                if waited >= self.reconnect_timeout:
                    raise StorageError(
                        f"journal {operation}: the server is unreachable ({type(exc).__name__})",
                        path=self.where,
                        operation=None,
                    ) from exc
                if delay == 0.05:
                    _log.warning("journal %s: %s; waiting for the server", self.where, exc)
                if repeats is not None:
                    repeats.append(waited)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except psycopg.Error as exc:
                raise StorageError(
                    f"journal {operation}: {type(exc).__name__}: {exc}",
                    path=self.where,
                    operation=None,
                ) from exc

    def _fence(self, key: str, action: str, *, tracked: bool) -> tuple[str, tuple[int, ...]]:
        """The ``AND fence = …`` a runner's write carries, or nothing when not fenced."""
        if self.fences is None:
            return "", ()
        fence = self.fences.get(key)
        if fence is None:
            raise ClaimLost(key=key, action=action, tracked=tracked, reason="not claimed here")
        return " AND fence = %s", (fence,)

    async def _why_not(
        self,
        key: str,
        action: str,
        allowed: Collection[str],
        *,
        tracked: bool,
        fence: tuple[str, tuple[int, ...]],
    ) -> tuple[str, Any, Any]:
        """A write changed nothing: the row's (state, status, job id), or the error why.

        `fence` is what the write carried (`_fence`): the row's fence is compared with the one
        the write was sent with, not with this runner's fence now, which may be another by the
        time the write comes back.
        """
        rows = await self.execute(
            action,
            "SELECT state, status, job_id, fence, owner FROM pollkit_jobs WHERE spec_key = %s",
            (key,),
        )
        if not rows or (rows[0][0] == PENDING and self.fences is None):
            raise KeyError(f"journal has no entry for key {key!r}")
        state, status, job_id, now_fence, owner = rows[0]
        if self.fences is not None and fence[1] != (now_fence,):
            # Left in `fences` until the scheduler has dropped the job (the runner's
            # `on_drop`): a row it still holds is never claimed again meanwhile.
            self.refused_writes += 1
            raise ClaimLost(
                key=key,
                action=action,
                tracked=tracked,
                reason=f"runner {owner} claimed it since (fence {now_fence})",
            )
        if state not in allowed:
            raise ConfigurationError(
                f"journal: cannot {action} key {key!r} in state {state!r}"
                f" (only from {', '.join(allowed)})"
            )
        return state, status, job_id

    # --- the Journal protocol ------------------------------------------------------------

    async def get(self, key: str) -> JournalEntry | None:
        """The entry for `key`, or None (also for a spec loaded but not yet begun)."""
        if key in self.fresh:
            self.fresh.discard(key)
            return None
        rows = await self.execute(
            "get",
            f"SELECT {WITH_OUTPUTS} FROM pollkit_jobs j WHERE j.spec_key = %s AND j.state <> %s",
            (key, PENDING),
        )
        return entry_of(rows[0]) if rows else None

    async def entries(self, states: Collection[str] | None = None) -> list[JournalEntry]:
        """Every entry (or those in `states`) in the order first written; a fenced runner
        sees only the rows it owns.

        Raises:
            ConfigurationError: `states` names an unknown state.
        """
        wanted = list(STATES if states is None else check_states(states))
        if not wanted:
            return []
        where, params = "j.state = ANY(%s)", [wanted]
        if self.fences is not None:
            where += " AND j.spec_key = ANY(%s)"
            params.append(list(self.fences))
        rows = await self.execute(
            "list entries",
            f"SELECT {WITH_OUTPUTS} FROM pollkit_jobs j WHERE {where} ORDER BY j.seq",
            params,
        )
        return [entry_of(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """How many entries are in each state (every state present, zero included)."""
        rows = await self.execute(
            "count", "SELECT state, COUNT(*) FROM pollkit_jobs GROUP BY state", ()
        )
        found = {state: int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in STATES}

    async def begin_submit(self, key: str, provider: str, spec: Mapping[str, Any]) -> JournalEntry:
        """Record that `spec` is about to be submitted, unless it is already known (see
        `SQLiteJournal.begin_submit`). A runner first waits for its lease to be valid.

        Raises:
            ConfigurationError: The key is already used by a different spec or provider.
            ClaimLost: Another runner owns the spec now.
            StorageError: The server refused the write.
        """
        _not_empty("key", key)
        _not_empty("provider", provider)
        text = canonical_json(spec)
        carried = self._fence(key, "begin the submit of", tracked=False)
        fence, fence_params = carried
        if self.before_submit is not None:
            await self.before_submit()
        rows = await self.execute(
            "begin submit",
            "INSERT INTO pollkit_jobs AS j (spec_key, provider, spec, state, attempts,"
            " created_at, updated_at) VALUES (%s, %s, %s, 'submitting', 1, now(), now())"
            " ON CONFLICT (spec_key) DO UPDATE SET state = 'submitting', attempts = 1,"
            " updated_at = now() WHERE j.state = %s AND j.spec = excluded.spec"
            f" AND j.provider = excluded.provider{fence.replace('fence', 'j.fence')}"
            f" RETURNING {ENTRY}",
            (key, provider, text, PENDING, *fence_params),
        )
        if rows:
            return entry_of(rows[0])
        existing = await self.execute(
            "begin submit",
            f"SELECT {WITH_OUTPUTS}, j.fence FROM pollkit_jobs j WHERE j.spec_key = %s",
            (key,),
        )
        row = existing[0]
        stored = canonical_json(json.loads(row[2]))
        if stored != text or row[1] != provider:
            raise ConfigurationError(
                f"journal: key {key!r} was recorded for a different"
                f" {'provider' if stored == text else 'spec'}; two specs must not share a key"
            )
        if self.fences is not None and fence_params != (row[14],):
            await self._why_not(key, "begin the submit of", STATES, tracked=False, fence=carried)
        return entry_of(row[:14])

    async def _update(
        self,
        key: str,
        action: str,
        allowed: Sequence[str],
        assignments: str,
        params: Sequence[Any],
        *,
        fence: tuple[str, tuple[int, ...]],
        extra: str = "",
        extra_params: Sequence[Any] = (),
        returning: str = "1",
        repeats: list[float] | None = None,
    ) -> list[tuple[Any, ...]]:
        fence_sql, fence_params = fence
        return await self.execute(
            action,
            f"UPDATE pollkit_jobs j SET {assignments}, updated_at = now()"
            f" WHERE j.spec_key = %s AND j.state = ANY(%s){extra}{fence_sql}"
            f" RETURNING {returning}",
            (*params, key, list(allowed), *extra_params, *fence_params),
            repeats=repeats,
        )

    async def record_submitted(
        self, key: str, job_id: str, kind: str | None, submitted_at: datetime
    ) -> None:
        """Record the job the API created for this spec (see `SQLiteJournal.record_submitted`).

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row is in another state, or already has another job id.
            ClaimLost: Another runner owns the spec now.
        """
        _not_empty("job_id", job_id)
        action = "record submitted"
        allowed = ("submitting", "ambiguous")
        fence = self._fence(key, action, tracked=False)
        changed = await self._update(
            key,
            action,
            allowed,
            "state = 'submitted', job_id = %s, kind = %s, error = NULL, submitted_at = %s",
            (job_id, kind, _as_utc(submitted_at)),
            fence=fence,
        )
        if changed:
            _log.debug("journal: key %s submitted as job %s", key, job_id)
            return
        _, _, known = await self._why_not(
            key, action, (*allowed, "submitted", "done"), tracked=False, fence=fence
        )
        if known != job_id:
            raise ConfigurationError(
                f"journal: key {key!r} is already job {known!r}, not {job_id!r}"
            )

    async def record_submit_failed(self, key: str, error: str) -> None:
        """Record that the server refused the submit: nothing was created (``rejected``)."""
        allowed = ("submitting", "rejected")
        action = "record a refused submit for"
        fence = self._fence(key, action, tracked=False)
        if not await self._update(
            key, action, allowed, "state = 'rejected', error = %s", (error,), fence=fence
        ):
            await self._why_not(key, action, allowed, tracked=False, fence=fence)

    async def retry_submit(self, key: str) -> JournalEntry:
        """Begin another submit of a ``rejected`` or ``ambiguous`` entry (attempts + 1)."""
        action = "retry the submit of"
        allowed = ("rejected", "ambiguous")
        fence = self._fence(key, action, tracked=False)
        if self.before_submit is not None:
            await self.before_submit()
        repeats: list[float] = []
        rows = await self._update(
            key,
            action,
            allowed,
            "state = 'submitting', attempts = j.attempts + 1",
            (),
            fence=fence,
            returning=ENTRY,
            repeats=repeats,
        )
        if rows:
            return entry_of(rows[0])
        also = ("submitting",) if repeats else ()
        await self._why_not(key, action, (*allowed, *also), tracked=False, fence=fence)
        # Sent again after a lost connection, and the first one was committed: that is ours.
        entry = await self.get(key)
        assert entry is not None
        return entry

    async def mark_ambiguous(self, key: str) -> None:
        """Record that a submit's outcome is unknown: the job may exist (``ambiguous``)."""
        action = "mark ambiguous"
        fence = self._fence(key, action, tracked=False)
        if await self._update(key, action, ("submitting",), "state = 'ambiguous'", (), fence=fence):
            _log.info("journal: key %s may or may not have been submitted; marked ambiguous", key)
            return
        await self._why_not(key, action, ("submitting", "ambiguous"), tracked=False, fence=fence)

    async def record_status(
        self,
        key: str,
        status: str,
        native_status: str,
        observed_at: datetime,
        error: str | None = None,
    ) -> None:
        """Record the job's status as last observed; a terminal one is final (see
        `SQLiteJournal.record_status`).

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: Not a pollkit status, or the row has no job yet.
            ClaimLost: Another runner owns the job now.
        """
        try:
            status = Status(status).value
        except ValueError as exc:
            raise ConfigurationError(f"journal: {status!r} is not a pollkit status") from exc
        terminal = status in _TERMINAL
        moment = _as_utc(observed_at)
        action = "record a status for"
        allowed = ("submitted", "done")
        fence = self._fence(key, action, tracked=True)
        changed = await self._update(
            key,
            action,
            allowed,
            "status = %s, native_status = %s, error = %s, observed_at = %s,"
            " finished_at = CASE WHEN %s THEN %s ELSE j.finished_at END",
            (status, native_status, error, moment, terminal, moment),
            fence=fence,
            # A terminal status is final; replies of concurrent polls can land out of order,
            # and the newer one stands.
            extra=" AND (j.status IS NULL OR NOT j.status = ANY(%s))"
            " AND (%s OR j.observed_at IS NULL OR j.observed_at <= %s)",
            extra_params=(list(_TERMINAL), terminal, moment),
        )
        if changed:
            return
        _, known, _ = await self._why_not(key, action, allowed, tracked=True, fence=fence)
        if known in _TERMINAL and known != status:
            _log.warning(
                "journal: key %s is already %s; ignoring later status %s", key, known, status
            )

    async def record_output(self, key: str, index: int, path: str, size: int, sha256: str) -> None:
        """Record a verified output file (the same index again replaces it).

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: A negative index or size, or the row has no job yet.
            ClaimLost: Another runner owns the job now.
        """
        if index < 0 or size < 0:
            raise ConfigurationError(f"journal: bad output index {index} or size {size}")
        action = "record an output for"
        allowed = ("submitted", "done")
        carried = self._fence(key, action, tracked=True)
        fence, fence_params = carried
        rows = await self.execute(
            action,
            "INSERT INTO pollkit_outputs (spec_key, idx, path, size, sha256, recorded_at)"
            " SELECT j.spec_key, %s, %s, %s, %s, now() FROM pollkit_jobs j"
            f" WHERE j.spec_key = %s AND j.state = ANY(%s){fence}"
            " ON CONFLICT (spec_key, idx) DO UPDATE SET path = excluded.path,"
            " size = excluded.size, sha256 = excluded.sha256, recorded_at = excluded.recorded_at"
            " RETURNING 1",
            (index, path, size, sha256, key, list(allowed), *fence_params),
        )
        if not rows:
            await self._why_not(key, action, allowed, tracked=True, fence=carried)

    async def record_done(self, key: str) -> None:
        """Record that nothing is left to do for this spec (``done``; settled for runners).

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row has no job (not ``submitted`` or ``done``).
            ClaimLost: Another runner owns the job now.
        """
        action = "mark done"
        fence = self._fence(key, action, tracked=True)
        if await self._update(
            key,
            action,
            ("submitted",),
            "state = 'done', settled = true, settled_at = now()",
            (),
            fence=fence,
        ):
            if self.fences is not None:
                self.fences.pop(key, None)
            return
        await self._why_not(key, action, ("submitted", "done"), tracked=True, fence=fence)
