"""Batches through `AsyncClient.run` and `pollkit run`, against the simulator."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import AsyncClient, Cadence, Client, MagicHour, Result, Status
from pollkit.batch.journal._records import default_journal_path, spec_key
from pollkit.batch.journal._sqlite import SQLiteJournal
from pollkit.cli import main
from pollkit.models import Event
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import FAST_RETRY, sha256_file

FAST = Scenario(
    time_scale=1000.0, queue_delay=(1.0, 3.0), render_time=(5.0, 20.0), image_size=(32, 32)
)
CADENCE = Cadence(initial=0.005, maximum=0.05, timeout=30)


def image(i: int) -> dict[str, Any]:
    return {"tool": "ai-image-generator", "image_count": 1 + i % 2, "style": {"prompt": f"p{i}"}}


def client_for(sim: Simulator | ThreadedSimulator) -> AsyncClient:
    return AsyncClient(
        MagicHour(api_key=sim.api_key, base_url=sim.url), cadence=CADENCE, retry=FAST_RETRY
    )


def server_outputs(sim: Simulator | ThreadedSimulator) -> dict[str, list[str]]:
    return {j["id"]: [o["sha256"] for o in j["outputs"]] for j in sim.stats()["jobs"]}


def assert_files_match_server(results: list[Result], sim: Simulator | ThreadedSimulator) -> None:
    expected = server_outputs(sim)
    for result in results:
        assert result.ok, result
        assert [sha256_file(p) for p in result.downloaded_paths] == expected[result.job_id]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FAST) as simulator:
        yield simulator


async def test_a_few_hundred_jobs_all_verified_and_a_rerun_sends_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    specs = [image(i) for i in range(300)]
    async with client_for(sim) as client:
        results = [r async for r in client.run(specs, download_directory=tmp_path, concurrency=32)]
        before = sim.stats()["requests"]["total"]
        again = [r async for r in client.run(specs, download_directory=tmp_path)]
    assert len(results) == 300
    assert len(sim.stats()["jobs"]) == 300  # nothing submitted twice
    assert_files_match_server(results, sim)
    assert sim.stats()["requests"]["total"] == before  # the rerun asked the server nothing
    assert sorted(r.job_id for r in again) == sorted(r.job_id for r in results)
    stray = [
        p.name for p in tmp_path.iterdir() if p.name != ".pollkit" and p.suffix not in (".png",)
    ]
    assert stray == []
    with SQLiteJournal(default_journal_path(tmp_path)) as journal:
        assert {state: n for state, n in journal.counts().items() if n} == {"done": 300}


async def test_mixed_outcomes_are_each_reported_and_the_rest_finishes(tmp_path: Path) -> None:
    async with Simulator(FAST) as sim, client_for(sim) as client:
        sim.plan_next(outcome="error", count=3)
        sim.plan_next(outcome="canceled", count=2)
        sim.plan_next(outcome="draft", count=2)  # never finishes: times out
        sim.plan_next(outcome="complete", count=13)
        events: list[Event] = []
        results = [
            r
            async for r in client.run(
                [image(i) for i in range(20)],
                download_directory=tmp_path,
                concurrency=1,  # submit in order, so the plans apply as written
                timeout=0.3,
                on_event=events.append,
                journal=False,
            )
        ]
    outcome = Counter("timeout" if r.error else r.status.value for r in results)
    assert outcome == {"complete": 13, "error": 3, "canceled": 2, "timeout": 2}
    timed_out = [r for r in results if r.error]
    assert all(
        r.state.status is Status.DRAFT and "not finished after 0.3 s" in str(r.error)
        for r in timed_out
    )
    kinds = Counter(e.kind for e in events)
    assert kinds["submitted"] == 20
    assert kinds["done"] == 18
    assert kinds["failed"] == 2
    assert kinds["download_finished"] == sum(len(r.downloaded_paths) for r in results) > 0
    seen = {e.state.status for e in events if e.kind == "status" and e.state}
    assert seen >= {Status.COMPLETE, Status.ERROR, Status.CANCELED, Status.DRAFT}


async def test_existing_job_ids_are_waited_for_and_downloaded(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client_for(sim) as client:
        ids = [(await client.submit(image(i))).job_id for i in range(5)]
        results = [r async for r in client.run(ids, download_directory=tmp_path, journal=False)]
    assert sorted(r.job_id for r in results) == sorted(ids)
    assert_files_match_server(results, sim)


async def test_a_429_pauses_the_whole_batch(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        sim.inject(status=429, count=1, path_prefix="/v1/image-projects/", retry_after=0.3)
        started = time.monotonic()
        results = [
            r
            async for r in client.run(
                [image(i) for i in range(10)], download_directory=tmp_path, journal=False
            )
        ]
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert elapsed >= 0.3
    assert sim.stats()["requests"]["by_status"]["429"] == 1  # one 429, not one per job


async def test_refused_submit_fails_that_spec_only(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        sim.inject(status=422, count=1, path_prefix="/v1/ai-image-generator", method="POST")
        results = [
            r
            async for r in client.run(
                [image(i) for i in range(4)], download_directory=tmp_path, concurrency=1
            )
        ]
        with SQLiteJournal(default_journal_path(tmp_path)) as journal:
            states = Counter(e.state for e in journal.entries())
        # A rerun sends the refused one again, and only that one.
        again = [
            r async for r in client.run([image(i) for i in range(4)], download_directory=tmp_path)
        ]
    assert Counter(r.ok for r in results) == {True: 3, False: 1}
    assert states == {"done": 3, "rejected": 1}
    assert all(r.ok for r in again)
    assert len(sim.stats()["jobs"]) == 4


async def test_an_interrupted_submit_is_ambiguous_until_told(
    sim: Simulator, tmp_path: Path
) -> None:
    spec = image(0)
    with SQLiteJournal(default_journal_path(tmp_path)) as journal:
        journal.begin_submit(spec_key(spec), "magichour", spec)  # the crash came right after
    async with client_for(sim) as client:
        (first,) = [r async for r in client.run([spec], download_directory=tmp_path)]
        assert len(sim.stats()["jobs"]) == 0
        (second,) = [
            r
            async for r in client.run([spec], download_directory=tmp_path, resubmit_ambiguous=True)
        ]
    assert first.state.error is not None
    assert first.state.error.code == "ambiguous_submit"
    assert "resubmit_ambiguous" in str(first.error)
    assert second.ok
    assert len(sim.stats()["jobs"]) == 1


def test_blocking_run(tmp_path: Path) -> None:
    with ThreadedSimulator(FAST) as sim:
        provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        with Client(provider, cadence=CADENCE) as client:
            results = list(client.run([image(i) for i in range(6)], download_directory=tmp_path))
        assert_files_match_server(results, sim)


def write_batch(path: Path, count: int) -> Path:
    lines = [
        json.dumps(
            {
                "endpoint": "ai-image-generator",
                "body": {"image_count": 1, "style": {"prompt": f"p{i}"}},
                "key": f"k{i}",
            }
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(sim: ThreadedSimulator, batch: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_HOUR_"))}
    env |= {"MAGIC_HOUR_API_KEY": sim.api_key, "MAGIC_HOUR_BASE_URL": sim.url}
    argv = [
        sys.executable,
        "-m",
        "pollkit",
        "run",
        str(batch),
        "--download-dir",
        str(out),
        "--no-progress",
    ]
    return subprocess.Popen(
        [*argv, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


SLOW = Scenario(
    time_scale=20.0, queue_delay=(1.0, 3.0), render_time=(5.0, 20.0), image_size=(32, 32), seed=5
)


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_a_random_moment_then_rerun(tmp_path: Path, seed: int) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 60)
    out = tmp_path / "out"
    with ThreadedSimulator(SLOW) as sim:
        child = run_cli(sim, batch, out)
        # The moment is random but reproducible; the kill lands while jobs render (0.05–1.2 s
        # of ~1.3 s), possibly during the submits.
        time.sleep(random.Random(seed).uniform(0.05, 1.2))
        child.send_signal(signal.SIGKILL)
        child.communicate()  # reaps it and closes its pipes
        rerun = run_cli(sim, batch, out, "--resubmit-ambiguous")
        stdout, stderr = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, stderr
        stats = sim.stats()
    # No duplicate: at most one job per spec, plus one per submit that was in flight at the kill.
    with SQLiteJournal(default_journal_path(out)) as journal:
        entries = journal.entries()
    assert len(entries) == 60
    assert all(e.state == "done" for e in entries)
    retried = sum(e.attempts - 1 for e in entries)
    assert 60 <= len(stats["jobs"]) <= 60 + retried
    expected = {
        o["sha256"]
        for j in stats["jobs"]
        if j["id"] in {e.job_id for e in entries}
        for o in j["outputs"]
    }
    on_disk = {sha256_file(p) for p in out.iterdir() if p.is_file()}
    assert on_disk == expected  # every file byte-exact, nothing stray or corrupt
    assert not list(out.glob("*.part*"))
    assert "60 of 60 jobs finished: 60 complete" in stdout


def test_sigint_stops_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 40)
    out = tmp_path / "out"
    with ThreadedSimulator(SLOW) as sim:
        child = run_cli(sim, batch, out)
        journal_file = default_journal_path(out)
        deadline = time.monotonic() + 20
        while not (journal_file.exists() and len(sim.stats()["jobs"]) >= 20):
            assert time.monotonic() < deadline
            assert child.poll() is None
            time.sleep(0.01)  # waiting for an observable condition
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
        assert child.returncode == 130, stderr
        assert "interrupted" in stderr
        assert "run the same command again" in stderr
        with SQLiteJournal(journal_file) as journal:
            counts = journal.counts()
        assert sum(counts.values()) >= 20  # readable and consistent
        # The submits on the wire at Ctrl-C were let finish and recorded: none is left unknown.
        assert counts["submitting"] == counts["ambiguous"] == 0
        rerun = run_cli(sim, batch, out)
        stdout, stderr = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, stderr
        assert len(sim.stats()["jobs"]) == 40  # each spec created once, no flag needed
        assert "40 of 40 jobs finished: 40 complete" in stdout


def test_bad_lines_are_reported_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "jobs.jsonl"
    good = json.dumps(
        {"endpoint": "ai-image-generator", "body": {"image_count": 1, "style": {"prompt": "x"}}}
    )
    batch.write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"endpoint": "ai-image-generator", "body": {"image_count": 0}}),
                "[1]",
                good,
            ]
        )
    )
    with ThreadedSimulator(FAST) as sim:
        code = main(
            [
                "run",
                str(batch),
                "--base-url",
                sim.url,
                "--api-key",
                sim.api_key,
                "--download-dir",
                str(tmp_path / "o"),
            ]
        )
        assert sim.stats()["requests"]["total"] == 0
    err = capsys.readouterr().err
    assert code == 2
    assert "3 bad lines" in err
    assert "line 2:" in err
    assert "line 3: magichour ai-image-generator spec: image_count" in err
    assert "line 4: a line must be a JSON object" in err


def test_demo_and_example_batch_run_through_the_same_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parents[3]
    with ThreadedSimulator(FAST) as sim:
        argv = [
            "run",
            str(root / "examples" / "batch.jsonl"),
            "--base-url",
            sim.url,
            "--api-key",
            sim.api_key,
        ]
        assert main([*argv, "--download-dir", str(tmp_path), "--no-progress"]) == 0
    assert "12 of 12 jobs finished: 12 complete; 16 files" in capsys.readouterr().out


async def test_a_refused_key_stops_the_batch(sim: Simulator, tmp_path: Path) -> None:
    from pollkit import AuthenticationError

    provider = MagicHour(api_key="mhk_wrong", base_url=sim.url)
    async with AsyncClient(provider, cadence=CADENCE, retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            _ = [
                r
                async for r in client.run(
                    [image(i) for i in range(50)], download_directory=tmp_path, concurrency=4
                )
            ]
    assert sim.stats()["requests"]["total"] <= 4  # no request per job after the first refusal
    with SQLiteJournal(default_journal_path(tmp_path)) as journal:
        states = Counter(e.state for e in journal.entries())
    # The refused submit is recorded as such; the others in flight when the batch stopped are
    # unknown (they may have reached the server) and will read as ambiguous next time.
    assert states["rejected"] >= 1
    assert set(states) <= {"rejected", "submitting"}
    assert sum(states.values()) <= 4


async def test_the_same_spec_twice_is_submitted_once(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        results = [
            r async for r in client.run([image(1), image(2), image(1)], download_directory=tmp_path)
        ]
    outcomes = Counter(r.state.error.code if r.state.error else r.status.value for r in results)
    assert outcomes == {"complete": 2, "duplicate": 1}
    assert len(sim.stats()["jobs"]) == 2
