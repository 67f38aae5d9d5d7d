"""The PostgreSQL journal's tables, its schema version, and DSNs made safe to show.

No psycopg here: the DSN helpers serve `open_journal` and the command line, which must work
without the ``postgres`` extra installed.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pollkit.batch.journal._records import STATES

__all__ = ["APPLICATION", "PG_SCHEMA", "PG_SCHEMA_VERSION", "is_postgres_url", "redact_dsn"]

PG_SCHEMA_VERSION = 1
APPLICATION = "pollkit-journal"
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
