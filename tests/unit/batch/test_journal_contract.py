"""The `Journal` protocol's contract: what every backend must do, through the async API the
scheduler uses. Each backend joins the `journal` fixture's parameters: SQLite, and PostgreSQL on
a real server (a fresh database per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pollkit import ConfigurationError, Journal, SQLiteJournal
from pollkit.batch.journal._records import STATES
from pollkit.batch.journal._threaded import ThreadedJournal

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SPEC = {"tool": "ai-image-generator", "style": {"prompt": "a fox"}}


@pytest.fixture(params=["sqlite", "postgresql"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    backend: Journal
    if request.param == "postgresql":
        from pollkit.batch.journal._postgres import PostgresJournal

        dsn = request.getfixturevalue("postgres_dsn")
        backend = await PostgresJournal(dsn).open()
    else:
        backend = ThreadedJournal(SQLiteJournal(tmp_path / "journal.sqlite"), close_store=True)
    try:
        yield backend
    finally:
        await backend.aclose()


async def submitted(journal: Journal, key: str) -> None:
    await journal.begin_submit(key, "sim", {"n": key})
    await journal.record_submitted(key, f"job-{key}", "image", T0)


async def test_it_is_a_journal(journal: Journal) -> None:
    assert isinstance(journal, Journal)


async def test_a_submit_is_recorded_before_and_after_the_request(journal: Journal) -> None:
    first = await journal.begin_submit("k", "sim", SPEC)
    assert (first.state, first.attempts, first.job_id) == ("submitting", 1, None)
    # Asked again (a rerun): the row is returned as it is, never a second one.
    again = await journal.begin_submit("k", "sim", dict(reversed(list(SPEC.items()))))
    assert again == first
    await journal.record_submitted("k", "job-1", "image", T0)
    entry = await journal.get("k")
    assert entry is not None
    assert (entry.state, entry.job_id, entry.kind, entry.submitted_at) == (
        "submitted",
        "job-1",
        "image",
        T0,
    )
    await journal.record_submitted("k", "job-1", "image", T0)  # the same job again: harmless
    with pytest.raises(ConfigurationError, match="already job 'job-1'"):
        await journal.record_submitted("k", "job-2", "image", T0)


async def test_a_key_names_one_spec(journal: Journal) -> None:
    await journal.begin_submit("k", "sim", SPEC)
    with pytest.raises(ConfigurationError, match="different spec"):
        await journal.begin_submit("k", "sim", {"other": 1})


async def test_refused_and_ambiguous_submits_are_retried_as_new_attempts(journal: Journal) -> None:
    await journal.begin_submit("refused", "sim", {"n": 1})
    await journal.record_submit_failed("refused", "HTTP 422")
    await journal.begin_submit("lost", "sim", {"n": 2})
    await journal.mark_ambiguous("lost")
    await journal.mark_ambiguous("lost")  # idempotent
    states = {e.key: (e.state, e.error) for e in await journal.entries()}
    assert states == {"refused": ("rejected", "HTTP 422"), "lost": ("ambiguous", None)}
    for key in ("refused", "lost"):
        retried = await journal.retry_submit(key)
        assert (retried.state, retried.attempts) == ("submitting", 2)
    # An ambiguous job that turns out to exist is adopted.
    await journal.mark_ambiguous("lost")
    await journal.record_submitted("lost", "job-found", None, T0)
    entry = await journal.get("lost")
    assert entry is not None
    assert (entry.state, entry.job_id) == ("submitted", "job-found")


@pytest.mark.parametrize(
    ("action", "call"),
    [
        ("retry the submit of", lambda j: j.retry_submit("k")),
        ("record a status for", lambda j: j.record_status("k", "queued", "QUEUED", T0)),
        ("record an output for", lambda j: j.record_output("k", 0, "a.png", 1, "aa")),
        ("mark done", lambda j: j.record_done("k")),
    ],
)
async def test_transitions_that_could_lose_a_job_are_refused(
    journal: Journal, action: str, call: object
) -> None:
    await journal.begin_submit("k", "sim", SPEC)
    with pytest.raises(ConfigurationError, match=f"cannot {action} key 'k' in state"):
        await call(journal)  # type: ignore[operator]
    with pytest.raises(KeyError, match="nope"):
        await journal.mark_ambiguous("nope")


async def test_a_terminal_status_is_final_and_outputs_are_upserted(journal: Journal) -> None:
    await submitted(journal, "k")
    await journal.record_status("k", "rendering", "RUNNING", T0 + timedelta(seconds=1))
    await journal.record_status("k", "queued", "QUEUED", T0)  # older: ignored
    await journal.record_status("k", "complete", "DONE", T0 + timedelta(seconds=2))
    await journal.record_status("k", "error", "FAILED", T0 + timedelta(seconds=3))
    await journal.record_output("k", 1, "b.png", 2, "bb")
    await journal.record_output("k", 0, "a.png", 1, "aa")
    await journal.record_output("k", 1, "b2.png", 3, "cc")
    await journal.record_done("k")
    entry = await journal.get("k")
    assert entry is not None
    assert (entry.state, entry.status, entry.native_status) == ("done", "complete", "DONE")
    assert entry.finished_at == T0 + timedelta(seconds=2)
    assert [(o.index, o.path, o.size) for o in entry.outputs] == [(0, "a.png", 1), (1, "b2.png", 3)]


async def test_entries_keep_their_order_and_counts_name_every_state(journal: Journal) -> None:
    for key in ("zeta", "alpha", "mid"):
        await journal.begin_submit(key, "sim", {"k": key})
    await journal.record_submitted("alpha", "job-a", None, T0)
    assert [e.key for e in await journal.entries()] == ["zeta", "alpha", "mid"]
    assert [e.key for e in await journal.entries({"submitting"})] == ["zeta", "mid"]
    assert await journal.entries(()) == []
    counts = await journal.counts()
    assert set(counts) == set(STATES)
    assert (counts["submitting"], counts["submitted"], counts["done"]) == (2, 1, 0)
