"""The PostgreSQL journal's tables, its schema version, its rows read back as entries, and
DSNs made safe to show.

No psycopg import here: the DSN helpers serve `open_journal` and the command line, which must
work without the ``postgres`` extra installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pollkit.batch.journal._records import (
    APPLICATION,
    STATES,
    JournalEntry,
    JournalOutput,
    check_schema_row,
    entry_from_row,
)

__all__ = [
    "APPLICATION",
    "ENTRY",
    "PG_SCHEMA",
    "PG_SCHEMA_VERSION",
    "WITH_OUTPUTS",
    "create_or_check",
    "entry_of",
    "is_postgres_url",
    "redact_dsn",
    "utc",
]

_log = logging.getLogger("pollkit.journal")

PG_SCHEMA_VERSION = 1
#: ``pg_advisory_xact_lock`` key under which the schema is created (one creator at a time).
SCHEMA_LOCK = 0x706F6C6C6B6974  # "pollkit"

#: A loaded spec no runner has begun to submit: invisible to the `Journal` protocol's reads.
PENDING = "pending"

_ALL_STATES = ", ".join(f"'{s}'" for s in (PENDING, *STATES))

PG_SCHEMA = (
    "CREATE TABLE pollkit_schema (application text NOT NULL, version integer NOT NULL)",
    """CREATE TABLE pollkit_runners (
        runner_id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        lease_until timestamptz NOT NULL,
        stopped_at timestamptz,
        claims bigint NOT NULL DEFAULT 0,
        refused_writes bigint NOT NULL DEFAULT 0,
        statements bigint NOT NULL DEFAULT 0
    )""",
    f"""CREATE TABLE pollkit_jobs (
        spec_key text PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        provider text NOT NULL,
        spec text NOT NULL,
        state text NOT NULL CHECK (state IN ({_ALL_STATES})),
        job_id text,
        kind text,
        status text,
        native_status text,
        error text,
        attempts integer NOT NULL,
        created_at timestamptz NOT NULL,
        submitted_at timestamptz,
        observed_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz NOT NULL,
        owner text,
        fence bigint NOT NULL DEFAULT 0,
        claimed_at timestamptz,
        settled boolean NOT NULL DEFAULT false,
        settled_at timestamptz
    )""",
    "CREATE INDEX pollkit_jobs_state ON pollkit_jobs (state)",
    # What claims scan: the rows nobody has finished, in load order.
    "CREATE INDEX pollkit_jobs_open ON pollkit_jobs (seq) WHERE NOT settled",
    # What a driver and joining runners read: the jobs finished since their last look.
    "CREATE INDEX pollkit_jobs_settled ON pollkit_jobs (settled_at) WHERE settled",
    """CREATE TABLE pollkit_outputs (
        spec_key text NOT NULL REFERENCES pollkit_jobs (spec_key) ON DELETE CASCADE,
        idx integer NOT NULL,
        path text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (spec_key, idx)
    )""",
)

ENTRY = (
    "j.spec_key, j.provider, j.spec, j.state, j.job_id, j.kind, j.status, j.native_status,"
    " j.error, j.attempts, j.created_at, j.submitted_at, j.finished_at"
)
WITH_OUTPUTS = (
    f"{ENTRY}, (SELECT COALESCE(json_agg(json_build_array(o.idx, o.path, o.size, o.sha256)"
    " ORDER BY o.idx), '[]'::json) FROM pollkit_outputs o WHERE o.spec_key = j.spec_key)"
)


def utc(moment: datetime | None) -> datetime | None:
    """`moment` in UTC (the server answers in its session time zone)."""
    return None if moment is None else moment.astimezone(timezone.utc)


def entry_of(row: Sequence[Any]) -> JournalEntry:
    """A `JournalEntry` from a row of `ENTRY` (or `WITH_OUTPUTS`) columns."""
    outputs = tuple(JournalOutput(*o) for o in row[13]) if len(row) > 13 else ()
    return entry_from_row(row, outputs, utc)


# `connection` is a psycopg ``AsyncConnection``, typed loosely: naming psycopg here, even for
# the type checker only, would tie this module (which pollkit imports without the extra) to it.
async def create_or_check(connection: Any, where: str) -> None:
    """Create the schema in an empty database, or check the one there.

    Args:
        connection: An open psycopg ``AsyncConnection`` (autocommit).
        where: The journal's redacted DSN, for messages.

    Raises:
        ConfigurationError: A journal of a newer pollkit, or a ``pollkit_schema`` table that
            is not a journal's.
    """
    async with connection.transaction():
        # One creator at a time: runners started together must not race on CREATE TABLE.
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        found = await (
            await connection.execute("SELECT to_regclass('pollkit_schema') IS NOT NULL")
        ).fetchone()
        if found is None or not found[0]:
            for statement in PG_SCHEMA:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO pollkit_schema (application, version) VALUES (%s, %s)",
                (APPLICATION, PG_SCHEMA_VERSION),
            )
            _log.info("journal %s: schema version %d created", where, PG_SCHEMA_VERSION)
            return
        row = await (
            await connection.execute("SELECT application, version FROM pollkit_schema")
        ).fetchone()
    check_schema_row(row, where, PG_SCHEMA_VERSION)


_SECRET_PARAMS = frozenset({"password", "passfile", "sslpassword"})


def is_postgres_url(location: object) -> bool:
    """Whether `location` is a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact_dsn(dsn: str) -> str:
    """`dsn` with its password (and any other secret parameter) replaced by ``***``.

    Args:
        dsn: A ``postgresql://`` URL or a ``key=value`` connection string.

    Returns:
        The same DSN, safe for a log line, an error message or a repr.
    """
    if "://" not in dsn:
        return re.sub(
            r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", r"\1=***", dsn, flags=re.I
        )
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{host}"
        query = urlencode(
            [
                (k, "***" if k.lower() in _SECRET_PARAMS else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return f"{dsn.split('://', 1)[0]}://***"
