"""What a batch's ``journal=`` argument names, opened for the run and closed after it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pollkit.batch.journal._lock import JournalLock, check_journal_location
from pollkit.batch.journal._pg_schema import is_postgres_url, redact_dsn
from pollkit.batch.journal._protocol import Journal
from pollkit.batch.journal._records import default_journal_path
from pollkit.batch.journal._sqlite import SQLiteJournal
from pollkit.batch.journal._threaded import ThreadedJournal
from pollkit.errors import ConfigurationError

if TYPE_CHECKING:
    from pollkit.batch.journal._postgres import PostgresJournal

__all__ = ["JournalArgument", "open_journal", "postgres_journal"]

#: ``True`` (the default file in the download directory), a path, a ``postgresql://`` URL, an
#: `SQLiteJournal`, any `Journal`, or ``False`` for none.
JournalArgument = Journal | SQLiteJournal | str | os.PathLike[str] | bool


def postgres_journal(url: str, **settings: Any) -> PostgresJournal:
    """A `PostgresJournal` for `url` (not yet open), importing the optional backend.

    Args:
        url: A ``postgresql://`` URL.
        settings: `PostgresJournal`'s keyword arguments (heartbeat, lease, capacity…).

    Raises:
        ConfigurationError: The ``postgres`` extra is not installed (the message says how),
            or a setting is bad.
    """
    try:  # the extra is optional: pollkit without it still imports
        from pollkit.batch.journal._postgres import PostgresJournal
    except ImportError as exc:
        raise ConfigurationError(
            f"journal {redact_dsn(url)}: a PostgreSQL journal needs the postgres extra:"
            " pip install 'pollkit[postgres]'"
        ) from exc
    return PostgresJournal(url, **settings)


@contextlib.asynccontextmanager
async def open_journal(journal: JournalArgument, directory: Path) -> AsyncIterator[Journal | None]:
    """The `Journal` a batch writes to, for the length of the block.

    An SQLite journal is locked for this run first (`JournalLock`: a second run of the batch
    refuses before it has read anything), opened if a path named it, and closed again after
    the block if it was opened here. A `Journal` of the caller's is used as it is and left
    open.

    Raises:
        JournalBusy: Another live run holds the SQLite journal.
        ConfigurationError: `journal` is none of the above, or a URL pollkit cannot open.
        StorageError: The journal file cannot be opened or created.
    """
    if journal is False:
        yield None
        return
    if isinstance(journal, Journal):
        yield journal
        return
    if is_postgres_url(journal):
        assert isinstance(journal, str)
        shared = await postgres_journal(journal).open()
        try:
            yield shared
        finally:
            await shared.aclose()
        return
    if journal is True:
        where = default_journal_path(directory)
    elif isinstance(journal, str | os.PathLike):
        where = check_journal_location(journal)
    elif isinstance(journal, SQLiteJournal):
        where = journal.path
    else:
        raise ConfigurationError(
            "journal must be True, False, a path, an SQLiteJournal or a Journal,"
            f" got {type(journal).__name__}"
        )
    lock = JournalLock(where)
    try:
        store = journal if isinstance(journal, SQLiteJournal) else SQLiteJournal(where)
        book = ThreadedJournal(store, close_store=store is not journal)
        try:
            yield book
        finally:
            await book.aclose()
    finally:
        lock.release()
