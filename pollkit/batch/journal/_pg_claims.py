"""The statements that let runners share a PostgreSQL journal: load, claim, heartbeat, settle.

A runner registers (``pollkit_runners``), heartbeats its one row (``lease_until`` = the
server's ``now()`` + the lease), and claims rows nobody has settled whose owner is none, or a
runner whose lease ran out: ``FOR UPDATE SKIP LOCKED``, so runners claiming at once never wait
for nor take the same rows. A claim bumps each row's ``fence``; a row claimed while
``submitting`` (its owner died with a request on the wire, or before) becomes ``ambiguous``,
for the submit rules to resolve, never to be sent blindly again. Server time decides leases,
so the runners' clocks do not matter. No psycopg here: everything goes through
`PostgresJournal.execute`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pollkit.batch.journal._pg_schema import PENDING, WITH_OUTPUTS, entry_of
from pollkit.batch.journal._records import JournalEntry
from pollkit.errors import ConfigurationError

if TYPE_CHECKING:
    from pollkit.batch.journal._postgres import PostgresJournal

__all__ = [
    "BatchView",
    "Claimed",
    "claim",
    "finished_since",
    "heartbeat",
    "load",
    "register",
    "reopen",
    "settle",
    "stop",
    "unsettled",
    "view",
]

_CHUNK = 2000
_LIVE = "r.lease_until > now() AND r.stopped_at IS NULL"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row a runner just claimed: its key, spec, the fence its writes carry, its state."""

    key: str
    spec: dict[str, Any]
    fence: int
    state: str


async def register(
    journal: PostgresJournal, runner_id: str, host: str, pid: int, lease: float
) -> None:
    """Make `runner_id` a live runner, its lease running from now."""
    await journal.execute(
        "register runner",
        "INSERT INTO pollkit_runners (runner_id, host, pid, started_at, heartbeat_at,"
        " lease_until) VALUES (%s, %s, %s, now(), now(), now() + make_interval(secs => %s))"
        # Repeated after a lost reply (a server restart), it must not fail.
        " ON CONFLICT (runner_id) DO UPDATE SET lease_until = excluded.lease_until",
        (runner_id, host, pid, lease),
    )


async def heartbeat(journal: PostgresJournal, runner_id: str, lease: float, claims: int) -> None:
    """Extend the runner's lease by `lease` seconds from now; record its counters."""
    await journal.execute(
        "heartbeat",
        "UPDATE pollkit_runners SET heartbeat_at = now(),"
        " lease_until = now() + make_interval(secs => %s), claims = %s, refused_writes = %s,"
        " statements = %s WHERE runner_id = %s",
        (lease, claims, journal.refused_writes, journal.statements, runner_id),
    )


async def stop(journal: PostgresJournal, runner_id: str, claims: int) -> None:
    """The runner leaves: its unsettled rows are free to claim at once, no lease to wait."""
    await journal.execute(
        "release",
        "UPDATE pollkit_jobs SET owner = NULL WHERE owner = %s AND NOT settled",
        (runner_id,),
    )
    await journal.execute(
        "stop runner",
        "UPDATE pollkit_runners SET stopped_at = now(), claims = %s, refused_writes = %s,"
        " statements = %s WHERE runner_id = %s",
        (claims, journal.refused_writes, journal.statements, runner_id),
    )


async def load(
    journal: PostgresJournal, provider: str, rows: Sequence[tuple[str, str, str | None]]
) -> int:
    """Add the batch's specs that the journal does not have yet (every runner may: a spec
    already loaded, by this runner or another, is left as it is).

    Args:
        journal: The shared journal.
        provider: The provider of every spec.
        rows: (key, canonical JSON of the spec, job id for an existing job or None).

    Returns:
        How many rows were new.

    Raises:
        ConfigurationError: A key is in the journal with a different spec or provider.
    """
    added = 0
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        keys, specs, jobs = ([r[i] for r in chunk] for i in range(3))
        params = (keys, specs, jobs)
        inserted = await journal.execute(
            "load specs",
            "INSERT INTO pollkit_jobs (spec_key, provider, spec, state, job_id, attempts,"
            " created_at, updated_at) SELECT t.k, %s, t.s,"
            " CASE WHEN t.j IS NULL THEN %s ELSE 'submitted' END, t.j, 0, now(), now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS t(k, s, j, n)"
            " ORDER BY t.n ON CONFLICT (spec_key) DO NOTHING RETURNING 1",
            (provider, PENDING, *params),
        )
        added += len(inserted)
        if len(inserted) < len(chunk):
            clash = await journal.execute(
                "load specs",
                "SELECT j.spec_key FROM pollkit_jobs j JOIN unnest(%s::text[], %s::text[])"
                " AS t(k, s) ON j.spec_key = t.k WHERE j.spec <> t.s OR j.provider <> %s LIMIT 3",
                (keys, specs, provider),
            )
            if clash:
                raise ConfigurationError(
                    f"journal: keys {[c[0] for c in clash]} were recorded for other specs;"
                    " two specs must not share a key"
                )
    return added


async def reopen(journal: PostgresJournal, keys: Sequence[str], *, ambiguous: bool) -> int:
    """Make the finished-but-not-done jobs among `keys` claimable again, as a rerun of an
    SQLite batch would retry them: refused submits, jobs given up while polled or whose
    download failed, and (only when told) submits in doubt. Done jobs stay done.

    Only jobs settled by a runner that is no longer live are reopened: those are an earlier
    run's. A runner joining a batch that live runners work does not retry what they just
    gave up on (that job already has its Result, from them).

    Returns:
        How many rows were reopened.
    """
    states = ["rejected", "submitted", *(["ambiguous"] if ambiguous else [])]
    rows = await journal.execute(
        "reopen",
        "UPDATE pollkit_jobs j SET settled = false, settled_at = NULL WHERE j.settled"
        " AND j.state = ANY(%s) AND j.spec_key = ANY(%s) AND NOT EXISTS ("
        f" SELECT 1 FROM pollkit_runners r WHERE r.runner_id = j.owner AND {_LIVE})"
        " RETURNING 1",
        (states, list(keys)),
    )
    return len(rows)


async def claim(
    journal: PostgresJournal, runner_id: str, limit: int, held: Sequence[str] = ()
) -> list[Claimed]:
    """Take up to `limit` rows nobody live owns and nobody has settled, oldest first.

    Rows this runner owns but does not hold are taken again too: a claim whose reply was
    lost (the server restarted after committing it) must not leave its rows owned by a live
    runner that does not know it has them. Rows it holds (`held`: the jobs it works on) are
    never taken, whoever owns them now: one that another runner took meanwhile (while this
    one's lease had lapsed) is lost to this one, and its next write says so (`ClaimLost`).
    Claimed back under a new fence instead, a write already sent with the old fence would
    come back refused for a row this runner owns, and the job would end half recorded.
    """
    rows = await journal.execute(
        "claim",
        "WITH picked AS (SELECT j.spec_key FROM pollkit_jobs j WHERE NOT j.settled"
        " AND NOT j.spec_key = ANY(%s) AND (j.owner IS NULL OR j.owner = %s OR NOT EXISTS ("
        f" SELECT 1 FROM pollkit_runners r WHERE r.runner_id = j.owner AND {_LIVE}))"
        " ORDER BY j.seq LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE pollkit_jobs j SET owner = %s, fence = j.fence + 1, claimed_at = now(),"
        " state = CASE WHEN j.state = 'submitting' THEN 'ambiguous' ELSE j.state END"
        " FROM picked WHERE j.spec_key = picked.spec_key"
        " RETURNING j.spec_key, j.spec, j.fence, j.state",
        (list(held), runner_id, limit, runner_id),
    )
    return [Claimed(key, json.loads(spec), fence, state) for key, spec, fence, state in rows]


async def settle(journal: PostgresJournal, key: str, fence: int, error: str | None = None) -> bool:
    """Mark a job this runner owns as finished (failed: nothing more to do); False when
    another runner owns it now. `error`, why a job failed (a download the store refused),
    replaces the row's, for a driver that reads results from the journal."""
    rows = await journal.execute(
        "settle",
        "UPDATE pollkit_jobs SET settled = true, settled_at = now(),"
        " error = COALESCE(%s, error) WHERE spec_key = %s AND fence = %s RETURNING 1",
        (error, key, fence),
    )
    return bool(rows)


async def unsettled(journal: PostgresJournal) -> int:
    """How many rows no runner has finished yet."""
    rows = await journal.execute(
        "count unsettled", "SELECT COUNT(*) FROM pollkit_jobs WHERE NOT settled"
    )
    return int(rows[0][0])


@dataclass(frozen=True, slots=True)
class BatchView:
    """The batch as all its runners see it (`pollkit batch status`).

    Attributes:
        states: Rows per state (``pending``: loaded, not begun), settled or not.
        unsettled: Rows no runner has finished.
        runners: Per runner: (id, host, pid, live, rows it owns unsettled, rows it finished,
            refused writes, statements).
        oldest: (key, state, created_at) of the oldest unsettled row, or None.
        stuck: (key, state, owner) of unsettled rows owned by no live runner and past
            ``pending`` (a dead runner's work, until another claims it), the first ten.
    """

    states: dict[str, int]
    unsettled: int
    runners: list[tuple[str, str, int, bool, int, int, int, int]]
    oldest: tuple[str, str, datetime] | None
    stuck: list[tuple[str, str, str | None]]


async def view(journal: PostgresJournal) -> BatchView:
    """Read the whole batch's progress (a few aggregate statements; writes nothing)."""
    states = dict(
        await journal.execute("status", "SELECT state, COUNT(*) FROM pollkit_jobs GROUP BY state")
    )
    runners = await journal.execute(
        "status",
        f"SELECT r.runner_id, r.host, r.pid, ({_LIVE}),"
        " COUNT(j.spec_key) FILTER (WHERE NOT j.settled),"
        " COUNT(j.spec_key) FILTER (WHERE j.settled), r.refused_writes, r.statements"
        " FROM pollkit_runners r LEFT JOIN pollkit_jobs j ON j.owner = r.runner_id"
        " GROUP BY r.runner_id ORDER BY r.started_at",
    )
    oldest = await journal.execute(
        "status",
        "SELECT spec_key, state, created_at FROM pollkit_jobs WHERE NOT settled"
        " ORDER BY seq LIMIT 1",
    )
    stuck = await journal.execute(
        "status",
        "SELECT j.spec_key, j.state, j.owner FROM pollkit_jobs j WHERE NOT j.settled"
        " AND j.state <> %s AND NOT EXISTS (SELECT 1 FROM pollkit_runners r"
        f" WHERE r.runner_id = j.owner AND {_LIVE}) ORDER BY j.seq LIMIT 10",
        (PENDING,),
    )
    return BatchView(
        states={str(k): int(v) for k, v in states.items()},
        unsettled=await unsettled(journal),
        runners=[tuple(r) for r in runners],
        oldest=tuple(oldest[0]) if oldest else None,
        stuck=[tuple(s) for s in stuck],
    )


async def finished_since(
    journal: PostgresJournal, runner_id: str, since: datetime | None
) -> tuple[list[tuple[JournalEntry, str | None]], datetime]:
    """The jobs other runners finished since `since` (server time), with who finished
    them, and the server's time now: a driver that joins the batch follows it with these.

    Returns:
        ((entry, owner) oldest first, now). Rows settled a little before `since` may come
        again (a commit can land after a later one): the caller skips those it has seen.
    """
    rows = await journal.execute(
        "follow the batch",
        f"SELECT {WITH_OUTPUTS}, j.owner, now() FROM pollkit_jobs j WHERE j.settled"
        " AND j.owner IS DISTINCT FROM %s AND (%s::timestamptz IS NULL"
        " OR j.settled_at > %s::timestamptz - interval '5 seconds') ORDER BY j.settled_at",
        (runner_id, since, since),
    )
    if not rows:
        now = await journal.execute("follow the batch", "SELECT now()")
        return [], now[0][0]
    return [(entry_of(row[:14]), row[14]) for row in rows], rows[-1][15]
