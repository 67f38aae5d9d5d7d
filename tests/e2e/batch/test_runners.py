"""Several runners on one batch through a shared PostgreSQL journal, against the simulator."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pollkit import AsyncClient, Cadence, ConfigurationError, MagicHour, Result
from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._postgres import PostgresJournal
from pollkit.batch.journal._records import canonical_json, spec_key
from pollkit.models import Event
from pollkit.providers.pixy import Pixy
from pollkit.sim import Scenario, Simulator
from tests.helpers import FAST_RETRY, sha256_file

FAST = Scenario(
    time_scale=1000.0, queue_delay=(1.0, 3.0), render_time=(5.0, 20.0), image_size=(32, 32)
)
CADENCE = Cadence(initial=0.005, maximum=0.05, timeout=30)


def image(i: int) -> dict[str, Any]:
    return {"tool": "ai-image-generator", "image_count": 1 + i % 2, "style": {"prompt": f"p{i}"}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FAST) as simulator:
        yield simulator


def client_for(sim: Simulator) -> AsyncClient:
    return AsyncClient(
        MagicHour(api_key=sim.api_key, base_url=sim.url), cadence=CADENCE, retry=FAST_RETRY
    )


async def work(
    sim: Simulator, journal: PostgresJournal | str, specs: list[Any], out: Path
) -> list[Result]:
    async with client_for(sim) as client:
        return [
            r
            async for r in client.run(specs, download_directory=out, journal=journal, concurrency=8)
        ]


async def test_three_runners_share_a_batch_and_each_spec_is_created_once(
    sim: Simulator, postgres_dsn: str, tmp_path: Path
) -> None:
    specs = [image(i) for i in range(300)]
    journals = [PostgresJournal(postgres_dsn, capacity=40) for _ in range(3)]
    for journal in journals:
        await journal.open()
    try:
        shares = await asyncio.gather(*(work(sim, j, specs, tmp_path / "out") for j in journals))
    finally:
        for journal in journals:
            await journal.aclose()
    results = [r for share in shares for r in share]
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert Counter(r.key for r in results).most_common(1)[0][1] == 1  # one runner each
    assert len(results) == len(specs)
    assert all(len(share) > 0 for share in shares), [len(s) for s in shares]
    jobs = {j["id"]: j for j in sim.stats()["jobs"]}
    assert len(jobs) == len(specs)  # each spec created once
    for result in results:
        expected = [o["sha256"] for o in jobs[result.job_id]["outputs"]]
        assert [sha256_file(p) for p in result.downloaded_paths] == expected
    with psycopg.connect(postgres_dsn) as db:
        rows = db.execute(
            "SELECT state, settled, count(*) FROM pollkit_jobs GROUP BY 1, 2"
        ).fetchall()
        runners = db.execute(
            "SELECT count(*) FILTER (WHERE stopped_at IS NOT NULL), sum(statements)"
            " FROM pollkit_runners"
        ).fetchone()
    assert rows == [("done", True, len(specs))]
    assert runners is not None
    assert runners[0] == 3
    # A rerun finds everything done and sends nothing.
    again = await work(sim, postgres_dsn, specs, tmp_path / "out")
    assert again == []
    assert len(sim.stats()["jobs"]) == len(specs)


async def test_a_driver_that_joins_yields_every_job_of_the_batch(
    sim: Simulator, postgres_dsn: str, tmp_path: Path
) -> None:
    specs = [image(i) for i in range(120)]
    helper = PostgresJournal(postgres_dsn, capacity=30)
    await helper.open()

    async def join() -> list[Result]:
        async with client_for(sim) as client:
            return [
                r
                async for r in client.run(
                    specs, download_directory=tmp_path / "out", journal=postgres_dsn, join=True
                )
            ]

    try:
        joined, helped = await asyncio.gather(join(), work(sim, helper, specs, tmp_path / "out"))
    finally:
        await helper.aclose()
    assert helped  # the other runner did part of the batch
    assert sorted(r.key or "" for r in joined) == sorted({r.key or "" for r in joined})
    assert len(joined) == len(specs)
    assert all(r.ok for r in joined)
    jobs = {j["id"]: j for j in sim.stats()["jobs"]}
    assert len(jobs) == len(specs)
    by_key = {r.key: r for r in joined}
    for result in helped:  # the joiner's view of the helper's jobs: same job, same files
        mine = by_key[result.key]
        assert mine.job_id == result.job_id
        assert mine.downloaded_paths == result.downloaded_paths
        expected = [o["sha256"] for o in jobs[result.job_id]["outputs"]]
        assert list(mine.sha256) == expected


async def test_join_needs_a_shared_journal(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        with pytest.raises(ConfigurationError, match="needs a postgresql:// journal"):
            async for _ in client.run([image(0)], download_directory=tmp_path, join=True):
                pass
    assert sim.stats()["jobs"] == []


PIXY_IMAGE = {"type": "image", "engine": "photon_flash", "delineation": "a red kite"}
SLOW = Scenario(time_scale=100.0, queue_delay=(5.0, 15.0), render_time=(40.0, 80.0))


@pytest.mark.parametrize("api", ["magichour", "pixy"])  # pixy polls through its list endpoint
async def test_jobs_taken_from_a_lapsed_runner_are_dropped_by_it_and_finished_by_the_taker(
    api: str, postgres_dsn: str, tmp_path: Path
) -> None:
    if api == "pixy":
        specs: list[Any] = [{**PIXY_IMAGE, "delineation": f"p{i}"} for i in range(60)]
    else:
        specs = [image(i) for i in range(60)]
    async with Simulator(SLOW) as sim:
        if api == "pixy":
            provider: Any = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
        else:
            provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        cadence = Cadence(initial=0.02, maximum=0.05, timeout=30)
        # The first runner's heartbeat is rare, so that it cannot renew between the lapse
        # and the second runner's first claim.
        taker = PostgresJournal(postgres_dsn)
        lapsed = PostgresJournal(postgres_dsn, heartbeat=50.0, lease=100.0)
        await taker.open()
        await lapsed.open()

        submitted: list[Event] = []
        holding = asyncio.Event()

        def count(event: Event) -> None:
            if event.kind == "submitted":
                submitted.append(event)
                if len(submitted) >= 20:
                    holding.set()

        async def run(journal: PostgresJournal, out: str) -> list[Result]:
            async with AsyncClient(provider, cadence=cadence, retry=FAST_RETRY) as client:
                return [
                    r
                    async for r in client.run(
                        specs,
                        download_directory=tmp_path / out,
                        journal=journal,
                        on_event=count if journal is lapsed else None,
                    )
                ]

        async def take_over() -> list[Result]:
            await holding.wait()  # the first runner holds 20 submitted jobs
            # The first runner stalls past its lease (as the server's clock says): the
            # second one, started now, claims every job it held.
            await taker.execute("lapse", "UPDATE pollkit_runners SET lease_until = now()")
            return await run(taker, "taker")

        try:
            first, second = await asyncio.gather(run(lapsed, "lapsed"), take_over())
        finally:
            await taker.aclose()
            await lapsed.aclose()
        jobs = {j["id"]: j for j in sim.stats()["jobs"]}
    assert second  # the taker finished the jobs it took
    assert lapsed.refused_writes > 0  # the first runner's writes to them matched nothing
    keys = [r.key for r in first + second]
    assert len(keys) == len(set(keys)) == len(specs)
    done = [r for r in first + second if r.ok]
    in_doubt = [r for r in first + second if not r.ok]
    assert all(r.error is not None and "submit" in str(r.error) for r in in_doubt)
    assert len(jobs) - len(done) <= len(in_doubt)  # each spec created once, doubts excepted
    for result in done:
        expected = [o["sha256"] for o in jobs[result.job_id]["outputs"]]
        assert [sha256_file(p) for p in result.downloaded_paths] == expected


async def test_a_reclaimed_submitted_job_is_polled_and_its_recorded_outputs_not_fetched_again(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """A runner died after its job completed and one of its two outputs was recorded: the
    runner that claims the job polls it and fetches only the other output."""
    spec = image(1)  # two outputs
    key = spec_key(spec)
    async with Simulator(FAST) as sim, client_for(sim) as client:
        submission = await client.submit(spec)
        state = await client.wait(submission.job_id, kind=submission.kind)
        first = await client.download(state.outputs[0], tmp_path / "dead", job_id=submission.job_id)
        # The dead runner's rows: its claim, the submit, the first output verified.
        dead = PostgresJournal(postgres_dsn)
        await dead.open()
        try:
            name = client.provider.name
            await claims.load(dead, name, [(key, canonical_json(spec), None)])
            await claims.register(dead, "dead", "host", 1, 30.0)
            dead.fences = {c.key: c.fence for c in await claims.claim(dead, "dead", 1)}
            await dead.begin_submit(key, name, spec)
            await dead.record_submitted(
                key, submission.job_id, submission.kind, submission.submitted_at
            )
            await dead.record_output(key, 0, str(first.path), first.size, first.sha256)
            await dead.execute("die", "UPDATE pollkit_runners SET lease_until = now()")
        finally:
            await dead.aclose()
        before = {j["id"]: j for j in sim.stats()["jobs"]}[submission.job_id]
        results = [
            r
            async for r in client.run(
                [spec], download_directory=tmp_path / "out", journal=postgres_dsn
            )
        ]
        after = {j["id"]: j for j in sim.stats()["jobs"]}[submission.job_id]
    assert len(sim.stats()["jobs"]) == 1  # not submitted again
    [result] = results
    assert result.ok, result.error
    assert result.job_id == submission.job_id
    assert result.polls >= 1
    assert after["status_requests"] > before["status_requests"]
    # One download request: the output nobody had recorded.
    assert after["download_requests"] - before["download_requests"] == 1
    assert result.downloaded_paths[0] == first.path
    assert result.downloaded_paths[1].parent == tmp_path / "out"
    expected = [o["sha256"] for o in after["outputs"]]
    assert list(result.sha256) == expected
    assert [sha256_file(p) for p in result.downloaded_paths] == expected
    with psycopg.connect(postgres_dsn) as db:
        row = db.execute(
            "SELECT state, settled, fence, (SELECT count(*) FROM pollkit_outputs o"
            " WHERE o.spec_key = j.spec_key) FROM pollkit_jobs j"
        ).fetchone()
    assert row == ("done", True, 2, 2)


async def test_a_runner_yields_no_result_for_a_job_taken_between_its_failure_and_its_settle(
    sim: Simulator, postgres_dsn: str, tmp_path: Path
) -> None:
    """Issue 18 (61 Results for 60 specs): a failure is written (a refused submit) and then
    settled; a runner that claims the job in between owns it, and the first runner's Result
    is not given, or the spec would get two."""
    spec = image(0)
    key = spec_key(spec)
    sim.inject(422, count=1, method="POST")  # the submit is refused: nothing was created
    journal = PostgresJournal(postgres_dsn)
    await journal.open()
    await claims.register(journal, "taker", "host", 2, 300.0)  # live all along
    failed: list[Event] = []
    taken = asyncio.Event()

    def take_over(event: Event) -> None:
        if event.kind == "failed":
            failed.append(event)
            # The taker claims the row at this moment (blocking the loop: the runner's
            # settle cannot run before it).
            with psycopg.connect(postgres_dsn, autocommit=True) as db:
                db.execute(
                    "UPDATE pollkit_jobs SET owner = 'taker', fence = fence + 1"
                    " WHERE spec_key = %s",
                    (key,),
                )
            taken.set()

    async def run() -> list[Result]:
        async with client_for(sim) as client:
            return [
                r
                async for r in client.run(
                    [spec], download_directory=tmp_path, journal=journal, on_event=take_over
                )
            ]

    try:
        running = asyncio.ensure_future(run())
        await asyncio.wait_for(taken.wait(), 30)
        # The taker finishes the job: the batch is over for every runner.
        await journal.execute(
            "taker settles", "UPDATE pollkit_jobs SET settled = true WHERE spec_key = %s", (key,)
        )
        results = await asyncio.wait_for(running, 30)
    finally:
        await journal.aclose()
    assert [e.key for e in failed] == [key]  # it failed here ...
    assert results == []  # ... and its Result is the taker's to give
    assert journal.refused_writes == 1  # its settle matched nothing
