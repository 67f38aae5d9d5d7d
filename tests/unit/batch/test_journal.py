"""The journal: state transitions, durability across close / reopen / SIGKILL, refusal of
foreign or newer files, and thread safety. Real SQLite files under `tmp_path`."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pollkit.batch.journal._records import STATES, JournalOutput, default_journal_path, spec_key
from pollkit.batch.journal._sqlite import SCHEMA_VERSION, SQLiteJournal
from pollkit.errors import ConfigurationError, StorageError

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
SPEC = {"prompt": "a red fox", "size": [512, 512], "steps": 30}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return default_journal_path(tmp_path / "out")


@pytest.fixture
def journal(path: Path) -> Iterator[SQLiteJournal]:
    with SQLiteJournal(path) as opened:
        yield opened


def _submitted(journal: SQLiteJournal, key: str, spec: dict[str, Any] | None = None) -> None:
    journal.begin_submit(key, "sim", spec if spec is not None else {"n": key})
    journal.record_submitted(key, f"job-{key}", "image", T0)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


# --- spec_key -----------------------------------------------------------------------------


def test_spec_key_is_independent_of_key_order_and_pinned() -> None:
    a = {"b": "é", "a": 1, "nested": {"y": 2, "x": [1, 2]}}
    b = {"nested": {"x": [1, 2], "y": 2}, "a": 1, "b": "é"}
    canonical = '{"a":1,"b":"é","nested":{"x":[1,2],"y":2}}'
    assert spec_key(a) == spec_key(b)
    assert spec_key(a) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert spec_key({"a": 2}) != spec_key({"a": 1})


def test_spec_key_prefers_the_users_key() -> None:
    assert spec_key(SPEC, "row-17") == "row-17"
    assert spec_key({"unserialisable": object()}, "row-17") == "row-17"


@pytest.mark.parametrize("key", ["", "   "])
def test_spec_key_refuses_an_empty_user_key(key: str) -> None:
    with pytest.raises(ConfigurationError, match="non-empty"):
        spec_key(SPEC, key)


@pytest.mark.parametrize(
    "spec", [{"x": object()}, {"x": float("nan")}, {1: "a", "b": 2}, ["not", "a", "mapping"]]
)
def test_spec_key_refuses_what_is_not_json(spec: Any) -> None:
    with pytest.raises(ConfigurationError):
        spec_key(spec)


def test_default_journal_path(tmp_path: Path) -> None:
    assert default_journal_path(tmp_path) == tmp_path / ".pollkit" / "journal.sqlite"
    assert default_journal_path(str(tmp_path)) == tmp_path / ".pollkit" / "journal.sqlite"


# --- transitions --------------------------------------------------------------------------


def test_full_life_survives_close_and_reopen(path: Path) -> None:
    key = spec_key(SPEC)
    with SQLiteJournal(path) as journal:
        entry = journal.begin_submit(key, "sim", SPEC)
        assert (entry.state, entry.attempts, entry.job_id) == ("submitting", 1, None)
        assert entry.spec == SPEC
        assert entry.created_at.tzinfo is not None
    assert path.parent.is_dir()

    with SQLiteJournal(path) as journal:
        journal.record_submitted(key, "job-1", "image", T0)
    with SQLiteJournal(path) as journal:
        journal.record_status(key, "rendering", "PROCESSING", T0 + timedelta(seconds=5))
    with SQLiteJournal(path) as journal:
        journal.record_status(key, "complete", "DONE", T0 + timedelta(seconds=9))
        journal.record_output(key, 0, "out/job-1-0.png", 123, "ab" * 32)
    with SQLiteJournal(path) as journal:
        journal.record_done(key)

    with SQLiteJournal(path) as journal:
        entry = journal.get(key)
    assert entry is not None
    assert entry.state == "done"
    assert (entry.job_id, entry.kind, entry.provider) == ("job-1", "image", "sim")
    assert (entry.status, entry.native_status, entry.error) == ("complete", "DONE", None)
    assert entry.submitted_at == T0
    assert entry.finished_at == T0 + timedelta(seconds=9)
    assert entry.outputs == (JournalOutput(0, "out/job-1-0.png", 123, "ab" * 32),)
    assert entry.attempts == 1


def test_begin_submit_is_committed_before_it_returns(path: Path) -> None:
    with SQLiteJournal(path) as writer:
        writer.begin_submit("k", "sim", SPEC)
        # Nothing else happened yet: no record_submitted, no close. Another connection (as
        # another process would) must already see the row.
        with SQLiteJournal(path) as reader:
            seen = reader.get("k")
        with closing(_raw(path)) as raw:
            row = raw.execute("SELECT state, attempts FROM pollkit_jobs").fetchall()
    assert seen is not None
    assert seen.state == "submitting"
    assert row == [("submitting", 1)]


def test_begin_submit_returns_an_existing_row_unchanged(journal: SQLiteJournal) -> None:
    _submitted(journal, "k", SPEC)
    again = journal.begin_submit("k", "sim", dict(reversed(list(SPEC.items()))))
    assert (again.state, again.job_id, again.attempts) == ("submitted", "job-k", 1)


def test_same_key_for_a_different_spec_or_provider_is_refused(journal: SQLiteJournal) -> None:
    journal.begin_submit("k", "sim", SPEC)
    with pytest.raises(ConfigurationError, match="different spec"):
        journal.begin_submit("k", "sim", {**SPEC, "steps": 31})
    with pytest.raises(ConfigurationError, match="different provider"):
        journal.begin_submit("k", "other", SPEC)
    entry = journal.get("k")
    assert entry is not None
    assert entry.spec == SPEC


def test_rejected_then_retried(journal: SQLiteJournal) -> None:
    journal.begin_submit("k", "sim", SPEC)
    journal.record_submit_failed("k", "HTTP 422: prompt too long")
    entry = journal.get("k")
    assert entry is not None
    assert (entry.state, entry.error) == ("rejected", "HTTP 422: prompt too long")

    retried = journal.retry_submit("k")
    assert (retried.state, retried.attempts) == ("submitting", 2)
    journal.record_submitted("k", "job-2", None, T0)
    entry = journal.get("k")
    assert entry is not None
    assert (entry.state, entry.job_id, entry.error, entry.attempts) == (
        "submitted",
        "job-2",
        None,
        2,
    )


def test_ambiguous_rows_are_retried_or_found(journal: SQLiteJournal) -> None:
    journal.begin_submit("lost", "sim", {"n": 1})
    journal.begin_submit("found", "sim", {"n": 2})
    for entry in journal.entries({"submitting"}):
        journal.mark_ambiguous(entry.key)
    journal.mark_ambiguous("lost")  # idempotent
    assert journal.counts()["ambiguous"] == 2

    assert journal.retry_submit("lost").attempts == 2
    # The job turned out to exist on the server: recorded without a second submit.
    journal.record_submitted("found", "job-found", None, T0)
    assert journal.counts() == {
        "submitting": 1,
        "submitted": 1,
        "rejected": 0,
        "ambiguous": 0,
        "done": 0,
    }


@pytest.mark.parametrize(
    ("setup", "call"),
    [
        ("submitted", lambda j: j.retry_submit("k")),
        ("submitting", lambda j: j.retry_submit("k")),
        ("submitted", lambda j: j.mark_ambiguous("k")),
        ("submitted", lambda j: j.record_submit_failed("k", "late")),
        ("submitted", lambda j: j.record_submitted("k", "another-job", None, T0)),
        ("submitting", lambda j: j.record_status("k", "queued", "Q", T0)),
        ("submitting", lambda j: j.record_output("k", 0, "p", 1, "00")),
        ("submitting", lambda j: j.record_done("k")),
        ("rejected", lambda j: j.record_submitted("k", "job", None, T0)),
    ],
)
def test_transitions_that_could_lose_or_duplicate_a_job_are_refused(
    journal: SQLiteJournal, setup: str, call: Any
) -> None:
    journal.begin_submit("k", "sim", SPEC)
    if setup == "submitted":
        journal.record_submitted("k", "job-k", None, T0)
    elif setup == "rejected":
        journal.record_submit_failed("k", "400")
    before = journal.get("k")
    with pytest.raises(ConfigurationError, match="'k'"):
        call(journal)
    assert journal.get("k") == before


def test_repeated_record_submitted_for_the_same_job_is_harmless(journal: SQLiteJournal) -> None:
    _submitted(journal, "k")
    journal.record_submitted("k", "job-k", "image", T0 + timedelta(hours=1))
    entry = journal.get("k")
    assert entry is not None
    assert entry.submitted_at == T0


@pytest.mark.parametrize(
    "call",
    [
        lambda j: j.record_submitted("nope", "job", None, T0),
        lambda j: j.record_submit_failed("nope", "e"),
        lambda j: j.retry_submit("nope"),
        lambda j: j.mark_ambiguous("nope"),
        lambda j: j.record_status("nope", "queued", "Q", T0),
        lambda j: j.record_output("nope", 0, "p", 1, "00"),
        lambda j: j.record_done("nope"),
    ],
)
def test_unknown_key_is_a_key_error_naming_it(journal: SQLiteJournal, call: Any) -> None:
    with pytest.raises(KeyError, match="nope"):
        call(journal)
    assert journal.get("nope") is None


def test_terminal_status_is_never_overwritten(journal: SQLiteJournal) -> None:
    _submitted(journal, "k")
    journal.record_status("k", "queued", "QUEUED", T0)
    entry = journal.get("k")
    assert entry is not None
    assert (entry.status, entry.finished_at) == ("queued", None)

    journal.record_status("k", "error", "FAILED", T0 + timedelta(seconds=1), error="nsfw")
    journal.record_status("k", "rendering", "RUNNING", T0 + timedelta(seconds=2))
    journal.record_status("k", "complete", "DONE", T0 + timedelta(seconds=3))
    entry = journal.get("k")
    assert entry is not None
    assert (entry.status, entry.native_status, entry.error) == ("error", "FAILED", "nsfw")
    assert entry.finished_at == T0 + timedelta(seconds=1)


def test_an_older_observation_does_not_replace_a_newer_one(journal: SQLiteJournal) -> None:
    _submitted(journal, "k")
    journal.record_status("k", "rendering", "RUNNING", T0 + timedelta(seconds=5))
    journal.record_status("k", "queued", "QUEUED", T0 + timedelta(seconds=1))
    entry = journal.get("k")
    assert entry is not None
    assert (entry.status, entry.native_status) == ("rendering", "RUNNING")
    # A terminal status is news whatever its timestamp.
    journal.record_status("k", "complete", "DONE", T0 + timedelta(seconds=4))
    entry = journal.get("k")
    assert entry is not None
    assert (entry.status, entry.finished_at) == ("complete", T0 + timedelta(seconds=4))


def test_status_must_be_a_pollkit_status(journal: SQLiteJournal) -> None:
    _submitted(journal, "k")
    with pytest.raises(ConfigurationError, match="PROCESSING"):
        journal.record_status("k", "PROCESSING", "PROCESSING", T0)


def test_timestamps_are_stored_as_utc(journal: SQLiteJournal) -> None:
    paris = timezone(timedelta(hours=1))
    journal.begin_submit("k", "sim", SPEC)
    journal.record_submitted("k", "job", None, datetime(2025, 1, 2, 4, 4, 5, tzinfo=paris))
    entry = journal.get("k")
    assert entry is not None
    assert entry.submitted_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert entry.submitted_at.utcoffset() == timedelta(0)


def test_outputs_are_upserted_and_ordered(journal: SQLiteJournal) -> None:
    _submitted(journal, "k")
    journal.record_output("k", 2, "c", 3, "cc")
    journal.record_output("k", 0, "a", 1, "aa")
    journal.record_output("k", 1, "b", 2, "bb")
    journal.record_output("k", 0, "a2", 10, "a2")
    entry = journal.get("k")
    assert entry is not None
    assert entry.outputs == (
        JournalOutput(0, "a2", 10, "a2"),
        JournalOutput(1, "b", 2, "bb"),
        JournalOutput(2, "c", 3, "cc"),
    )
    with pytest.raises(ConfigurationError):
        journal.record_output("k", -1, "x", 1, "x")


def test_entries_in_insertion_order_filtered_by_state_and_counts(journal: SQLiteJournal) -> None:
    keys = ["zeta", "alpha", "mid", "beta"]
    for key in keys:
        journal.begin_submit(key, "sim", {"k": key})
    journal.record_submitted("alpha", "j-a", None, T0)
    journal.record_submitted("beta", "j-b", None, T0)
    journal.record_output("beta", 1, "b1", 1, "11")
    journal.record_output("beta", 0, "b0", 1, "00")
    journal.record_done("beta")
    journal.record_submit_failed("mid", "400")

    assert [e.key for e in journal.entries()] == keys
    assert [e.key for e in journal.entries(["submitted", "done"])] == ["alpha", "beta"]
    assert [e.key for e in journal.entries(("submitting",))] == ["zeta"]
    assert journal.entries([]) == []
    done = journal.entries({"done"})
    assert [o.index for o in done[0].outputs] == [0, 1]
    assert journal.entries()[0].outputs == ()
    assert journal.counts() == {
        "submitting": 1,
        "submitted": 1,
        "rejected": 1,
        "ambiguous": 0,
        "done": 1,
    }
    assert set(journal.counts()) == set(STATES)
    with pytest.raises(ConfigurationError, match="complete"):
        journal.entries(["complete"])


# --- the file -----------------------------------------------------------------------------


def test_file_is_wal_and_synchronous_follows_durable(tmp_path: Path) -> None:
    for durable, expected in ((True, 2), (False, 1)):  # FULL = 2, NORMAL = 1
        path = tmp_path / f"{durable}.sqlite"
        with SQLiteJournal(path, durable=durable) as journal:
            connection = journal._connection
            assert connection is not None
            assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert connection.execute("PRAGMA synchronous").fetchone() == (expected,)
            assert connection.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(ConfigurationError, match=r"notes\.sqlite is not a pollkit journal"):
        SQLiteJournal(path)
    assert path.read_text().startswith("these are my notes")


def test_someone_elses_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("CREATE TABLE users (name TEXT)")
        raw.commit()
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match=r"app\.db is not a pollkit journal"):
        SQLiteJournal(path)
    assert path.read_bytes() == before  # not even switched to WAL


def test_a_journal_from_a_newer_pollkit_is_refused(path: Path) -> None:
    SQLiteJournal(path).close()
    with closing(_raw(path)) as raw:
        raw.execute("UPDATE pollkit_schema SET version = ?", (SCHEMA_VERSION + 1,))
        raw.commit()
    with pytest.raises(ConfigurationError, match=r"schema version 2.*newer pollkit") as info:
        SQLiteJournal(path)
    assert str(path) in str(info.value)


def test_an_empty_file_becomes_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with SQLiteJournal(path) as journal:
        journal.begin_submit("k", "sim", SPEC)
    with SQLiteJournal(path) as journal:
        assert journal.counts()["submitting"] == 1


def test_a_directory_path_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="directory") as info:
        SQLiteJournal(tmp_path)
    assert info.value.path == str(tmp_path)


def test_a_path_under_a_file_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError) as info:
        SQLiteJournal(blocker / ".pollkit" / "journal.sqlite")
    assert info.value.path == str(blocker / ".pollkit" / "journal.sqlite")


def test_a_closed_journal_says_so(path: Path) -> None:
    journal = SQLiteJournal(path)
    journal.close()
    journal.close()
    with pytest.raises(ConfigurationError, match="closed"):
        journal.get("k")


def test_a_failed_write_is_rolled_back(journal: SQLiteJournal) -> None:
    journal.begin_submit("k", "sim", SPEC)
    with pytest.raises(ConfigurationError):
        journal.record_submitted("k", "", None, T0)
    # The lock and the connection are usable again, with no transaction left open.
    assert journal._connection is not None
    assert not journal._connection.in_transaction
    journal.record_submitted("k", "job", None, T0)


# --- crashes and concurrency --------------------------------------------------------------

_CHILD = """
import os, signal, sys
from datetime import datetime, timezone
from pollkit import SQLiteJournal

journal = SQLiteJournal(sys.argv[1])
for i in range(50):
    journal.begin_submit(f"k{i:02d}", "sim", {"i": i, "prompt": "x" * 200})
    if i % 2 == 0:
        journal.record_submitted(f"k{i:02d}", f"job-{i}", "image", datetime.now(timezone.utc))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_run_leaves_every_row_intact(path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, timeout=30, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    # Killed without closing: the rows live in the WAL, which the next open must recover.
    assert path.with_name(path.name + "-wal").stat().st_size > 0

    with SQLiteJournal(path) as journal:
        entries = journal.entries()
        counts = journal.counts()
        for entry in journal.entries({"submitting"}):
            journal.mark_ambiguous(entry.key)
        after = journal.counts()
    assert [e.key for e in entries] == [f"k{i:02d}" for i in range(50)]
    for i, entry in enumerate(entries):
        assert entry.spec == {"i": i, "prompt": "x" * 200}
        assert entry.attempts == 1
        if i % 2 == 0:
            assert (entry.state, entry.job_id) == ("submitted", f"job-{i}")
            assert entry.submitted_at is not None
        else:
            assert (entry.state, entry.job_id, entry.submitted_at) == ("submitting", None, None)
    assert (counts["submitted"], counts["submitting"]) == (25, 25)
    assert (after["ambiguous"], after["submitting"]) == (25, 0)
    with closing(_raw(path)) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_four_threads_share_one_journal(path: Path) -> None:
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(200):
                key = f"t{thread}-{i}"
                journal.begin_submit(key, "sim", {"t": thread, "i": i})
                journal.record_submitted(key, f"job-{key}", None, T0)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with SQLiteJournal(path, durable=False) as journal:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert journal.counts()["submitted"] == 800
    with SQLiteJournal(path) as journal:
        entries = journal.entries()
    assert len({e.key for e in entries}) == 800
    assert all(e.job_id == f"job-{e.key}" for e in entries)


def test_two_journals_on_one_file_see_each_others_writes(path: Path) -> None:
    with SQLiteJournal(path) as first, SQLiteJournal(path) as second:
        first.begin_submit("k", "sim", SPEC)
        assert second.begin_submit("k", "sim", SPEC).attempts == 1
        second.record_submitted("k", "job", None, T0)
        entry = first.get("k")
    assert entry is not None
    assert entry.job_id == "job"


def test_nothing_secret_or_bulky_is_logged_at_info(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="pollkit.journal")
    with SQLiteJournal(path) as journal:
        journal.begin_submit("k", "sim", {"prompt": "my secret prompt"})
        journal.mark_ambiguous("k")
    assert "my secret prompt" not in caplog.text
    assert json.dumps({"prompt": "my secret prompt"}) not in caplog.text
