"""`pollkit batch status`: the whole batch as the runners sharing it left it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._postgres import PostgresJournal
from pollkit.batch.journal._records import canonical_json
from pollkit.cli import main

T0 = datetime(2025, 1, 2, tzinfo=timezone.utc)


async def two_runners_one_gone(dsn: str) -> None:
    async with PostgresJournal(dsn) as journal:
        await claims.load(
            journal, "sim", [(f"k{i}", canonical_json({"n": i}), None) for i in range(5)]
        )
        await claims.register(journal, "gone:1:a", "h", 1, 30.0)
        journal.fences = {c.key: c.fence for c in await claims.claim(journal, "gone:1:a", 2)}
        await journal.begin_submit("k0", "sim", {"n": 0})
        await journal.record_submitted("k0", "job-0", None, T0)
        await journal.execute("lapse", "UPDATE pollkit_runners SET lease_until = now()")
        await claims.register(journal, "live:2:b", "h", 2, 30.0)


def test_status_counts_states_and_runners_and_names_what_is_stuck(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(two_runners_one_gone(postgres_dsn))
    assert main(["batch", "status", "--journal", postgres_dsn]) == 0
    out = capsys.readouterr().out
    assert "batch: 5 jobs, 0 finished, 5 open" in out
    assert "states: pending 4, submitting 0, submitted 1, rejected 0, ambiguous 0, done 0" in out
    assert "gone:1:a  gone  holds 2, finished 0" in out
    assert "live:2:b  live  holds 0" in out
    assert "oldest unfinished: k0 (submitted" in out
    assert "stuck: k0 (submitted) with gone:1:a, which is gone" in out


def test_status_of_an_unreachable_journal_hides_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["batch", "status", "--journal", "postgresql://u:s3cret@127.0.0.1:9/x"])
    err = capsys.readouterr().err
    assert code == 1
    assert "s3cret" not in err
    assert "u:***@127.0.0.1:9" in err


def test_status_wants_a_postgresql_journal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "status", "--journal", "out/.pollkit/journal.sqlite"]) == 2
    assert "must be a postgresql:// URL" in capsys.readouterr().err


async def finished_batch(dsn: str) -> None:
    async with PostgresJournal(dsn) as journal:
        await claims.load(
            journal, "sim", [(f"k{i}", canonical_json({"n": i}), None) for i in range(3)]
        )
        await journal.execute("finish", "UPDATE pollkit_jobs SET settled = true")


def test_watch_draws_the_batch_until_it_is_finished(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(finished_batch(postgres_dsn))
    assert main(["batch", "status", "--journal", postgres_dsn, "--watch"]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err  # the bar, full
    assert "batch: 3 jobs, 3 finished, 0 open" in captured.out
