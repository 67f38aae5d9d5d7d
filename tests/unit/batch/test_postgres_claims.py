"""Claims, leases and fences of a shared PostgreSQL journal, two runners in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest

from pollkit import ConfigurationError
from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._postgres import PostgresJournal
from pollkit.batch.journal._protocol import ClaimLost
from pollkit.batch.journal._records import canonical_json

T0 = datetime(2025, 1, 2, tzinfo=timezone.utc)


@pytest.fixture
async def pair(postgres_dsn: str) -> AsyncIterator[tuple[PostgresJournal, PostgresJournal]]:
    a, b = PostgresJournal(postgres_dsn), PostgresJournal(postgres_dsn)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


def rows(n: int) -> list[tuple[str, str, str | None]]:
    return [(f"k{i:03d}", canonical_json({"n": i}), None) for i in range(n)]


async def runner(journal: PostgresJournal, name: str, lease: float = 30.0) -> None:
    await claims.register(journal, name, "host", 1, lease)
    journal.fences = {}


async def test_loading_twice_adds_each_spec_once_and_refuses_a_reused_key(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    a, b = pair
    added = await asyncio.gather(claims.load(a, "sim", rows(50)), claims.load(b, "sim", rows(50)))
    assert sorted(added) == [0, 50]
    assert await claims.unsettled(a) == 50
    with pytest.raises(ConfigurationError, match=r"keys \['k001'\] were recorded for other"):
        await claims.load(a, "sim", [("k001", canonical_json({"n": "other"}), None)])


async def test_runners_claiming_at_once_never_take_the_same_row(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    a, b = pair
    await claims.load(a, "sim", rows(200))
    await runner(a, "A")
    await runner(b, "B")
    got: dict[str, list[str]] = {"A": [], "B": []}

    async def take(journal: PostgresJournal, name: str) -> None:
        while found := await claims.claim(journal, name, 7, got[name]):
            got[name] += [c.key for c in found]

    await asyncio.gather(take(a, "A"), take(b, "B"))
    assert not set(got["A"]) & set(got["B"])
    assert len(got["A"]) + len(got["B"]) == 200
    assert got["A"]
    assert got["B"]
    # A claim whose reply was lost (a server restart) is taken again by its runner, and only it.
    lost = got["A"][-3:]
    again = await claims.claim(a, "A", 10, got["A"][:-3])
    assert sorted(c.key for c in again) == sorted(lost)
    assert await claims.claim(b, "B", 10, got["B"]) == []


async def test_a_lapsed_runner_loses_its_jobs_and_its_writes_change_nothing(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    old, new = pair
    await claims.load(old, "sim", rows(3))
    await runner(old, "old")
    await runner(new, "new")
    mine = await claims.claim(old, "old", 10)
    assert [c.fence for c in mine] == [1, 1, 1]
    for c in mine:
        old.fences[c.key] = c.fence  # type: ignore[index]
    await old.begin_submit("k000", "sim", {"n": 0})  # in flight when the runner stalls
    await old.begin_submit("k001", "sim", {"n": 1})
    await old.record_submitted("k001", "job-1", None, T0)
    assert await claims.claim(new, "new", 10) == []  # the old runner's lease still holds
    # The old runner stalls past its lease (no heartbeat): the server's clock says so.
    await new.execute(
        "lapse", "UPDATE pollkit_runners SET lease_until = now() WHERE runner_id = 'old'"
    )
    taken = {c.key: c for c in await claims.claim(new, "new", 10)}
    assert {k: (c.fence, c.state) for k, c in taken.items()} == {
        "k000": (2, "ambiguous"),  # a submit in doubt is never sent blindly again
        "k001": (2, "submitted"),
        "k002": (2, "pending"),
    }
    for c in taken.values():
        new.fences[c.key] = c.fence  # type: ignore[index]
    before = await new.entries()
    with pytest.raises(ClaimLost, match="runner new claimed it since"):
        await old.record_status("k001", "complete", "done", T0)
    with pytest.raises(ClaimLost):
        await old.begin_submit("k002", "sim", {"n": 2})
    with pytest.raises(ClaimLost):
        await old.record_submitted("k000", "job-0", None, T0)
    assert old.refused_writes == 3
    # Still held until the scheduler has dropped them (the runner's `on_drop`): meanwhile no
    # claim of this runner takes them back.
    assert old.fences == {"k000": 1, "k001": 1, "k002": 1}
    assert await new.entries() == before  # nothing changed
    await new.record_status("k001", "complete", "done", T0)
    await new.record_done("k001")
    assert not await claims.settle(old, "k002", 1)
    assert await claims.settle(new, "k002", 2)
    assert await claims.unsettled(new) == 1


async def test_a_runner_never_claims_back_a_row_it_holds_and_a_late_write_stays_refused(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    """Issue 18's restart bug: the old runner's row was taken, then its taker lapsed too. A
    claim of the old runner must not take back the row it still works on (a write of it sent
    with the old fence would come back refused for a row it owns), and a write is judged by
    the fence it was sent with, not by the runner's fence when its answer comes back."""
    old, new = pair
    await claims.load(old, "sim", rows(2))
    await runner(old, "old")
    await runner(new, "new")
    for c in await claims.claim(old, "old", 10):
        old.fences[c.key] = c.fence  # type: ignore[index]
    assert old.fences == {"k000": 1, "k001": 1}
    await new.execute(
        "lapse", "UPDATE pollkit_runners SET lease_until = now() WHERE runner_id = 'old'"
    )
    assert {c.key for c in await claims.claim(new, "new", 10)} == {"k000", "k001"}
    await old.execute(
        "lapse", "UPDATE pollkit_runners SET lease_until = now() WHERE runner_id = 'new'"
    )
    await claims.heartbeat(old, "old", 30.0, 2)
    # Both rows now belong to a dead runner; the old one holds them and leaves them.
    assert await claims.claim(old, "old", 10, list(old.fences)) == []

    async def refreshed() -> None:
        # The write is on its way with fence 1 when this runner's fence of the row moves.
        old.fences["k000"] = 3  # type: ignore[index]

    old.before_submit = refreshed
    with pytest.raises(ClaimLost, match="runner new claimed it since"):
        await old.begin_submit("k000", "sim", {"n": 0})
    assert (await old.execute("s", "SELECT state FROM pollkit_jobs WHERE spec_key = 'k000'")) == [
        ("pending",)
    ]
    # Dropped by the scheduler, the row is free to claim again: as new work, under a new fence.
    del old.fences["k000"]  # type: ignore[union-attr]
    again = await claims.claim(old, "old", 10, list(old.fences))
    assert [(c.key, c.fence) for c in again] == [("k000", 3)]


async def test_a_rerun_reopens_what_did_not_end_done_and_doubts_only_when_told(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    journal, _ = pair
    await claims.load(journal, "sim", rows(4))
    for key, state in zip(
        ("k000", "k001", "k002", "k003"),
        ("done", "rejected", "ambiguous", "submitted"),
        strict=True,
    ):
        await journal.execute(
            "set",
            "UPDATE pollkit_jobs SET state = %s, settled = true WHERE spec_key = %s",
            (state, key),
        )
    keys = [key for key, _, _ in rows(4)]
    assert await claims.reopen(journal, keys, ambiguous=False) == 2  # rejected, submitted
    assert await claims.reopen(journal, keys, ambiguous=True) == 1  # and now the doubt
    open_rows = await journal.execute(
        "read", "SELECT spec_key FROM pollkit_jobs WHERE NOT settled ORDER BY 1"
    )
    assert open_rows == [("k001",), ("k002",), ("k003",)]
    assert await claims.reopen(journal, ["elsewhere"], ambiguous=True) == 0


async def test_a_joining_runner_leaves_alone_what_a_live_runner_gave_up_on(
    pair: tuple[PostgresJournal, PostgresJournal],
) -> None:
    """A runner starting while others work the batch must not retry a job a live runner just
    failed and settled (that job already has its Result); once that runner has stopped, the
    failure is an earlier run's and a rerun retries it."""
    journal, _ = pair
    await claims.load(journal, "sim", rows(1))
    await runner(journal, "live")
    await journal.execute(
        "fail",
        "UPDATE pollkit_jobs SET state = 'rejected', settled = true, owner = 'live'"
        " WHERE spec_key = 'k000'",
    )
    assert await claims.reopen(journal, ["k000"], ambiguous=True) == 0
    await claims.stop(journal, "live", 1)
    assert await claims.reopen(journal, ["k000"], ambiguous=True) == 1
