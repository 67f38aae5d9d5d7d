"""What the PostgreSQL journal adds to the contract: its schema, its errors, its DSNs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psycopg
import pytest

from pollkit import ConfigurationError
from pollkit.batch.journal._open import open_journal
from pollkit.batch.journal._pg_schema import redact_dsn
from pollkit.batch.journal._postgres import PostgresJournal
from pollkit.errors import StorageError


async def test_runners_started_together_create_the_schema_once(postgres_dsn: str) -> None:
    journals = await asyncio.gather(*(PostgresJournal(postgres_dsn).open() for _ in range(4)))
    try:
        rows = await journals[0].execute("read", "SELECT application, version FROM pollkit_schema")
        assert rows == [("pollkit-journal", 1)]
    finally:
        await asyncio.gather(*(j.aclose() for j in journals))


async def test_a_journal_of_a_newer_pollkit_is_refused(postgres_dsn: str) -> None:
    async with PostgresJournal(postgres_dsn) as journal:
        await journal.execute("bump", "UPDATE pollkit_schema SET version = 99")
    with pytest.raises(ConfigurationError, match="schema version 99, written by a newer"):
        await PostgresJournal(postgres_dsn).open()


async def test_a_schema_table_of_someone_else_is_refused(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE pollkit_schema (application text, version integer)")
        connection.execute("INSERT INTO pollkit_schema VALUES ('other', 1)")
    with pytest.raises(ConfigurationError, match="is not a pollkit journal"):
        await PostgresJournal(postgres_dsn).open()


async def test_a_loaded_spec_is_not_an_entry_until_its_submit_begins(postgres_dsn: str) -> None:
    async with PostgresJournal(postgres_dsn) as journal:
        await journal.execute(
            "load",
            "INSERT INTO pollkit_jobs (spec_key, provider, spec, state, attempts, created_at,"
            " updated_at) VALUES ('k', 'sim', '{\"n\":1}', 'pending', 0, now(), now())",
        )
        assert await journal.get("k") is None
        assert sum((await journal.counts()).values()) == 0
        with pytest.raises(KeyError):
            await journal.mark_ambiguous("k")
        entry = await journal.begin_submit("k", "sim", {"n": 1})
        assert (entry.state, entry.attempts) == ("submitting", 1)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://bob:s3cret@db:5432/jobs", "postgresql://bob:***@db:5432/jobs"),
        ("postgresql://bob@db/jobs?password=s3cret&sslmode=require", "sslmode=require"),
        ("host=db user=bob password=s3cret dbname=jobs", "host=db user=bob password=*** dbname"),
        ("host=db password='s3 cret' dbname=jobs", "host=db password=*** dbname=jobs"),
    ],
)
def test_a_dsn_is_shown_without_its_password(dsn: str, shown: str) -> None:
    assert "s3" not in redact_dsn(dsn)
    assert shown in redact_dsn(dsn)
    assert "s3cret" not in repr(PostgresJournal(dsn))


async def test_an_unreachable_server_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        await PostgresJournal("postgresql://bob:s3cret@127.0.0.1:9/jobs").open()
    assert "s3cret" not in str(caught.value)
    assert "bob:***@127.0.0.1:9" in str(caught.value)


async def test_without_the_extra_the_error_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pollkit.batch.journal._postgres", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'pollkit\[postgres\]'") as caught:
        async with open_journal("postgresql://bob:s3cret@db/jobs", tmp_path):
            pass
    assert "s3cret" not in str(caught.value)
