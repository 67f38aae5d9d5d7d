"""`SQLiteJournal`: the embedded journal, one SQLite file per batch directory.

One file (``<download_directory>/.pollkit/journal.sqlite``) holds one row per spec, keyed by
`spec_key`, and one row per verified output. Its purpose is money: a paid job must never be
submitted twice because a run was interrupted, so the row saying "about to submit" is committed
(and, when `durable`, on the disk) *before* the request leaves. The rows follow the life drawn
in `pollkit.batch.journal._records`.

Its methods are blocking (SQLite, the disk): a batch reaches it through `ThreadedJournal`,
which gives it the async `Journal` protocol the scheduler speaks.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from pollkit.batch.journal._records import (
    APPLICATION,
    STATES,
    JournalEntry,
    JournalOutput,
    canonical_json,
    check_schema_row,
    check_states,
    entry_from_row,
)
from pollkit.errors import ConfigurationError, StorageError
from pollkit.models import Status

__all__ = ["SCHEMA_VERSION", "SQLiteJournal"]

_log = logging.getLogger("pollkit.journal")

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 30_000
_TERMINAL = frozenset({Status.COMPLETE.value, Status.ERROR.value, Status.CANCELED.value})

# Table names carry a prefix so that a journal is recognisable, and never mistaken for (or
# written into) someone else's database.
_SCHEMA = (
    "CREATE TABLE pollkit_schema (application TEXT NOT NULL, version INTEGER NOT NULL)",
    f"""CREATE TABLE pollkit_jobs (
        seq INTEGER PRIMARY KEY,
        spec_key TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
        job_id TEXT,
        kind TEXT,
        status TEXT,
        native_status TEXT,
        error TEXT,
        attempts INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        submitted_at TEXT,
        observed_at TEXT,
        finished_at TEXT,
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX pollkit_jobs_state ON pollkit_jobs (state)",
    """CREATE TABLE pollkit_outputs (
        spec_key TEXT NOT NULL REFERENCES pollkit_jobs (spec_key),
        idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (spec_key, idx)
    )""",
)
_JOB_COLUMNS = (
    "spec_key, provider, spec, state, job_id, kind, status, native_status, error, attempts,"
    " created_at, submitted_at, finished_at"
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _time_text(moment: datetime) -> str:
    # A naive datetime is taken as UTC: that is what the rest of pollkit produces.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _entry(row: tuple[Any, ...], outputs: tuple[JournalOutput, ...]) -> JournalEntry:
    return entry_from_row(row, outputs, _time)


def _not_empty(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"journal: {name} must be a non-empty string, got {value!r}")


class SQLiteJournal:
    """A batch's durable record, in one SQLite file (WAL mode).

    Every method commits before it returns, holds one internal lock (so one journal may be
    shared by threads), and may block on the disk: call it from a worker thread, not the event
    loop. Several processes may open the same file; SQLite serialises their writes.

    Args:
        path: The journal file (see `default_journal_path`); parent directories are created.
        durable: Flush every commit to the disk (``synchronous=FULL``), so that a row written
            before a submit survives a power cut. False (``NORMAL``) still survives a killed
            process, and is several times faster on slow disks.

    Raises:
        ConfigurationError: The file exists but is not a pollkit journal, or was written by a
            newer pollkit.
        StorageError: The path is a directory, or it cannot be created, opened or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        if self.path.is_dir():
            raise StorageError("journal path is a directory", path=str(self.path), operation=None)
        self._make_parents()
        is_new = not self.path.exists()
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open journal: {exc}", path=str(self.path), operation=None
            ) from exc
        try:
            self._prepare(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        if is_new and durable:
            with suppress(OSError):  # best effort: SQLite already synced its WAL's entry
                _fsync_directory(self.path.parent)
        _log.debug("journal %s open (durable=%s)", self.path, durable)

    def _make_parents(self) -> None:
        created: list[Path] = []
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            created.append(parent)
            parent = parent.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.durable:
                # A new directory entry is only durable once its parent is synced; without
                # this a power cut could lose the whole `.pollkit` directory.
                for directory in reversed(created):
                    _fsync_directory(directory.parent)
        except OSError as exc:
            raise StorageError(
                f"cannot create the journal's directory: {exc.strerror or exc}",
                path=str(self.path),
                operation=None,
            ) from exc

    def _prepare(self, connection: sqlite3.Connection) -> None:
        where = str(self.path)
        try:
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            # Identify the file before changing anything in it (WAL mode is written to the
            # header): a stranger's database must be left exactly as it was.
            self._check_identity(connection)
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                _log.warning("journal %s: WAL mode unavailable, using %s", where, mode)
            connection.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("BEGIN IMMEDIATE")
            try:
                # Checked again under the write lock: another process may have created it.
                if not self._check_identity(connection):
                    for statement in _SCHEMA:
                        connection.execute(statement)
                    connection.execute(
                        "INSERT INTO pollkit_schema (application, version) VALUES (?, ?)",
                        (APPLICATION, SCHEMA_VERSION),
                    )
                connection.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot open journal: {exc}", path=where, operation=None) from exc
        except sqlite3.DatabaseError as exc:
            # SQLITE_NOTADB / SQLITE_CORRUPT: some other file, or a damaged one.
            raise ConfigurationError(f"{where} is not a pollkit journal ({exc})") from exc

    def _check_identity(self, connection: sqlite3.Connection) -> bool:
        """True for a pollkit journal this code can read, False for an empty database."""
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            return False
        if "pollkit_schema" not in tables:
            raise ConfigurationError(
                f"{self.path} is not a pollkit journal (an SQLite database with other tables)"
            )
        row = connection.execute("SELECT application, version FROM pollkit_schema").fetchone()
        check_schema_row(row, str(self.path), SCHEMA_VERSION)
        return True

    def close(self) -> None:
        """Close the file. Idempotent; the journal cannot be used afterwards."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteJournal({str(self.path)!r}, durable={self.durable})"

    @contextmanager
    def _transaction(self, operation: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed on success, rolled back on any exception
        (Ctrl-C included), with SQLite's errors turned into `StorageError`."""
        with self._lock:
            connection = self._connection
            if connection is None:
                raise ConfigurationError(f"journal {self.path} is closed ({operation})")
            try:
                # IMMEDIATE takes the write lock up front, so a read-then-write cannot be
                # overtaken by another process between the two.
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield connection
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        with suppress(sqlite3.Error):
                            connection.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(
                    f"journal {operation}: {exc}", path=str(self.path), operation=None
                ) from exc

    @staticmethod
    def _fetch(connection: sqlite3.Connection, key: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = connection.execute(
            f"SELECT {_JOB_COLUMNS} FROM pollkit_jobs WHERE spec_key = ?", (key,)
        ).fetchone()
        return row

    @staticmethod
    def _outputs(connection: sqlite3.Connection, key: str) -> tuple[JournalOutput, ...]:
        rows = connection.execute(
            "SELECT idx, path, size, sha256 FROM pollkit_outputs WHERE spec_key = ? ORDER BY idx",
            (key,),
        )
        return tuple(JournalOutput(*row) for row in rows)

    def _load(self, connection: sqlite3.Connection, key: str) -> JournalEntry | None:
        row = self._fetch(connection, key)
        return None if row is None else _entry(row, self._outputs(connection, key))

    def _state(self, connection: sqlite3.Connection, key: str, action: str, *allowed: str) -> str:
        row = connection.execute(
            "SELECT state FROM pollkit_jobs WHERE spec_key = ?", (key,)
        ).fetchone()
        if row is None:
            raise KeyError(f"journal has no entry for key {key!r}")
        state: str = row[0]
        if state not in allowed:
            raise ConfigurationError(
                f"journal: cannot {action} key {key!r} in state {state!r}"
                f" (only from {', '.join(allowed)})"
            )
        return state

    def _set(self, connection: sqlite3.Connection, key: str, **columns: Any) -> None:
        columns["updated_at"] = _now()
        assignments = ", ".join(f"{name} = ?" for name in columns)
        connection.execute(
            f"UPDATE pollkit_jobs SET {assignments} WHERE spec_key = ?", (*columns.values(), key)
        )

    def begin_submit(self, key: str, provider: str, spec: Mapping[str, Any]) -> JournalEntry:
        """Record that `spec` is about to be submitted, unless it is already known.

        A new row (state ``submitting``, attempts 1) is committed before this returns: send
        the request only afterwards. An existing row is returned unchanged, and the caller
        decides from its state.

        Args:
            key: The spec's key (`spec_key`).
            provider: The provider's name.
            spec: The request body.

        Returns:
            The entry, new or existing.

        Raises:
            ConfigurationError: The key is already used by a different spec or provider (two
                specs must not share a key), or the spec is not JSON.
            StorageError: The disk refused the write.
        """
        _not_empty("key", key)
        _not_empty("provider", provider)
        text = canonical_json(spec)
        with self._transaction("begin submit") as connection:
            existing = self._load(connection, key)
            if existing is None:
                now = _now()
                connection.execute(
                    "INSERT INTO pollkit_jobs (spec_key, provider, spec, state, attempts,"
                    " created_at, updated_at) VALUES (?, ?, ?, 'submitting', 1, ?, ?)",
                    (key, provider, text, now, now),
                )
                entry = self._load(connection, key)
                assert entry is not None
                return entry
        stored = canonical_json(existing.spec)
        if stored != text or existing.provider != provider:
            raise ConfigurationError(
                f"journal: key {key!r} was recorded for a different"
                f" {'provider' if stored == text else 'spec'}; two specs must not share a key"
            )
        return existing

    def record_submitted(
        self, key: str, job_id: str, kind: str | None, submitted_at: datetime
    ) -> None:
        """Record that the API created job `job_id` for this spec (state ``submitted``).

        Also accepted for an ``ambiguous`` row (the job was found on the server after all),
        and repeated for the same job id; a different job id for a submitted row is refused.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row is in another state, or already has another job id.
        """
        _not_empty("job_id", job_id)
        with self._transaction("record submitted") as connection:
            state = self._state(
                connection, key, "record submitted", "submitting", "ambiguous", "submitted", "done"
            )
            if state in ("submitted", "done"):
                known = connection.execute(
                    "SELECT job_id FROM pollkit_jobs WHERE spec_key = ?", (key,)
                ).fetchone()[0]
                if known != job_id:
                    raise ConfigurationError(
                        f"journal: key {key!r} is already job {known!r}, not {job_id!r}"
                    )
                return
            self._set(
                connection,
                key,
                state="submitted",
                job_id=job_id,
                kind=kind,
                error=None,
                submitted_at=_time_text(submitted_at),
            )
        _log.debug("journal: key %s submitted as job %s", key, job_id)

    def record_submit_failed(self, key: str, error: str) -> None:
        """Record that the server refused the submit (a 4xx): nothing was created.

        The row becomes ``rejected``; a later run may `retry_submit` it.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row is not ``submitting`` (or already ``rejected``).
        """
        with self._transaction("record submit failed") as connection:
            self._state(connection, key, "record a refused submit for", "submitting", "rejected")
            self._set(connection, key, state="rejected", error=error)
        _log.debug("journal: key %s rejected: %s", key, error)

    def retry_submit(self, key: str) -> JournalEntry:
        """Begin another submit of a ``rejected`` or ``ambiguous`` row.

        The row is back in ``submitting`` with one more attempt, committed before this returns.
        For an ambiguous row this may pay twice: the caller decides that.

        Returns:
            The updated entry.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row is in any other state.
        """
        with self._transaction("retry submit") as connection:
            self._state(connection, key, "retry the submit of", "rejected", "ambiguous")
            connection.execute(
                "UPDATE pollkit_jobs SET state = 'submitting', attempts = attempts + 1,"
                " updated_at = ? WHERE spec_key = ?",
                (_now(), key),
            )
            entry = self._load(connection, key)
        assert entry is not None
        _log.debug("journal: key %s submit attempt %d", key, entry.attempts)
        return entry

    def mark_ambiguous(self, key: str) -> None:
        """Mark a ``submitting`` row left by an interrupted run: sent or not, nobody knows.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row is neither ``submitting`` nor already ``ambiguous``.
        """
        with self._transaction("mark ambiguous") as connection:
            state = self._state(connection, key, "mark ambiguous", "submitting", "ambiguous")
            if state == "ambiguous":
                return
            self._set(connection, key, state="ambiguous")
        _log.info("journal: key %s may or may not have been submitted; marked ambiguous", key)

    def record_status(
        self,
        key: str,
        status: str,
        native_status: str,
        observed_at: datetime,
        error: str | None = None,
    ) -> None:
        """Record the job's status as last observed.

        The first terminal status (``complete``, ``error``, ``canceled``) also sets
        `finished_at`, and is final: later observations do not replace it. A non-terminal
        observation older than the last one recorded is ignored.

        Args:
            key: The spec's key.
            status: pollkit's status (a `Status` or its value).
            native_status: The API's own status string.
            observed_at: When it was observed.
            error: Why the job failed, for ``error``.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: Not a pollkit status, or the row has no job yet.
        """
        try:
            status = Status(status).value
        except ValueError as exc:
            raise ConfigurationError(f"journal: {status!r} is not a pollkit status") from exc
        with self._transaction("record status") as connection:
            self._state(connection, key, "record a status for", "submitted", "done")
            known, last = connection.execute(
                "SELECT status, observed_at FROM pollkit_jobs WHERE spec_key = ?", (key,)
            ).fetchone()
            moment = _time_text(observed_at)
            if status not in _TERMINAL and last is not None and moment < last:
                # Replies of concurrent polls can land out of order: the newer one stands.
                # (Same-format UTC text compares in time order.)
                return
            if known in _TERMINAL:
                if status != known:
                    _log.warning(
                        "journal: key %s is already %s; ignoring later status %s",
                        key,
                        known,
                        status,
                    )
                return
            columns: dict[str, Any] = {
                "status": status,
                "native_status": native_status,
                "error": error,
                "observed_at": moment,
            }
            if status in _TERMINAL:
                columns["finished_at"] = moment
            self._set(connection, key, **columns)

    def record_output(self, key: str, index: int, path: str, size: int, sha256: str) -> None:
        """Record a verified output file; recording the same index again replaces it.

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: A negative index or size, or the row has no job yet.
        """
        if index < 0 or size < 0:
            raise ConfigurationError(f"journal: bad output index {index} or size {size}")
        with self._transaction("record output") as connection:
            self._state(connection, key, "record an output for", "submitted", "done")
            connection.execute(
                "INSERT INTO pollkit_outputs (spec_key, idx, path, size, sha256, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (spec_key, idx) DO UPDATE SET"
                " path = excluded.path, size = excluded.size, sha256 = excluded.sha256,"
                " recorded_at = excluded.recorded_at",
                (key, index, path, size, sha256, _now()),
            )

    def record_done(self, key: str) -> None:
        """Record that nothing is left to do for this spec (outputs verified, or none).

        Raises:
            KeyError: No row for `key`.
            ConfigurationError: The row has no job (not ``submitted`` or ``done``).
        """
        with self._transaction("record done") as connection:
            if self._state(connection, key, "mark done", "submitted", "done") == "submitted":
                self._set(connection, key, state="done")

    def get(self, key: str) -> JournalEntry | None:
        """The entry for `key`, or None."""
        with self._transaction("get", write=False) as connection:
            return self._load(connection, key)

    def entries(self, states: Collection[str] | None = None) -> list[JournalEntry]:
        """Every entry (or those in `states`), in the order they were first written.

        Raises:
            ConfigurationError: `states` names an unknown state.
        """
        where = ""
        params: tuple[str, ...] = ()
        if states is not None:
            params = check_states(states)
            if not params:
                return []
            where = f"WHERE state IN ({', '.join('?' * len(params))})"
        with self._transaction("list entries", write=False) as connection:
            rows = connection.execute(
                f"SELECT {_JOB_COLUMNS} FROM pollkit_jobs {where} ORDER BY seq", params
            ).fetchall()
            outputs: dict[str, list[JournalOutput]] = {}
            for key, *fields in connection.execute(
                "SELECT o.spec_key, o.idx, o.path, o.size, o.sha256 FROM pollkit_outputs o"
                f" JOIN pollkit_jobs USING (spec_key) {where} ORDER BY o.spec_key, o.idx",
                params,
            ):
                outputs.setdefault(key, []).append(JournalOutput(*fields))
        return [_entry(row, tuple(outputs.get(row[0], ()))) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many rows are in each state (every state is present, zero included)."""
        with self._transaction("count", write=False) as connection:
            rows = connection.execute("SELECT state, COUNT(*) FROM pollkit_jobs GROUP BY state")
            found = dict(rows.fetchall())
        return {state: found.get(state, 0) for state in STATES}


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
