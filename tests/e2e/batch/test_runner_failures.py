"""Runners that break: three `pollkit run` processes share a batch through one PostgreSQL
journal, against a `ThreadedSimulator` in this process. One is SIGKILLed mid-batch and another
later; one is frozen (SIGSTOP) past its lease and resumed; the server itself is restarted. In
every case the batch ends as if nothing happened: each spec created once (the simulator's
count, except submits in doubt, which are reported), every file byte-exact, no `.part` left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pollkit.sim import Scenario, ThreadedSimulator
from tests.postgres import PostgresServer

JOBS = 2000
# The freeze and the restart need fewer jobs to land mid-batch; they keep the suite short.
SMALL = 600
# Renders of 0.06–0.23 s real, shorter than the CLI's first poll (1 s): a job waits for that
# poll, then is downloaded; small images keep the files small.
SCENARIO = Scenario(
    time_scale=100.0,
    queue_delay=(1.0, 3.0),
    render_time=(5.0, 20.0),
    image_size=(16, 16),
    seed=5,
)
HEARTBEAT, LEASE = 0.25, 1.5


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(SCENARIO) as simulator:
        yield simulator


def write_batch(path: Path, jobs: int) -> Path:
    lines = [
        json.dumps(
            {
                "endpoint": "ai-image-generator",
                "body": {"image_count": 1 + (i % 4 == 0), "style": {"prompt": f"runner {i}"}},
                "key": f"k{i:04d}",
            }
        )
        for i in range(jobs)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Runners:
    """The runner processes of one test; every one is killed at the end, whatever happens."""

    def __init__(self, sim: ThreadedSimulator, batch: Path, out: Path, dsn: str, logs: Path):
        self.sim, self.batch, self.out, self.dsn, self.logs = sim, batch, out, dsn, logs
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, jobs: int = JOBS) -> None:
        self.jobs = jobs
        write_batch(self.batch, jobs)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_"))}
        env |= {"MAGIC_HOUR_API_KEY": self.sim.api_key, "MAGIC_HOUR_BASE_URL": self.sim.url}
        for _ in range(n):
            i = len(self.children)
            argv = [sys.executable, "-m", "pollkit", "run", str(self.batch)]
            argv += ["--download-dir", str(self.out), "--journal", self.dsn, "--no-progress"]
            argv += ["--concurrency", "32", "--heartbeat", str(HEARTBEAT), "--lease", str(LEASE)]
            with (
                (self.logs / f"r{i}.out").open("wb") as out,
                (self.logs / f"r{i}.err").open("wb") as err,
            ):
                self.children.append(subprocess.Popen(argv, env=env, stdout=out, stderr=err))

    def output(self, i: int) -> str:
        return (self.logs / f"r{i}.out").read_text() + (self.logs / f"r{i}.err").read_text()

    def wait(self, i: int) -> int:
        return self.children[i].wait(timeout=50)

    def kill_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.kill()
                child.wait(10)


@pytest.fixture
def runners(sim: ThreadedSimulator, postgres_dsn: str, tmp_path: Path) -> Iterator[Runners]:
    group = Runners(sim, tmp_path / "jobs.jsonl", tmp_path / "out", postgres_dsn, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return list(db.execute(sql, params).fetchall())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        time.sleep(0.02)  # polling an observable condition of other processes


def done_rows(dsn: str) -> int:
    try:
        return int(query(dsn, "SELECT count(*) FROM pollkit_jobs WHERE state = 'done'")[0][0])
    except psycopg.Error:  # the schema is not there yet
        return 0


def live_runner_ids(dsn: str) -> dict[int, str]:
    """pid → runner id, of the runners registered so far."""
    try:
        return {pid: rid for rid, pid in query(dsn, "SELECT runner_id, pid FROM pollkit_runners")}
    except psycopg.Error:
        return {}


def check_batch(runners: Runners, reports: str) -> dict[str, int]:
    """Every spec done once or reported in doubt; files byte-exact; nothing left behind."""
    sim, dsn, out, jobs_in_batch = runners.sim, runners.dsn, runners.out, runners.jobs
    rows = query(
        dsn, "SELECT spec_key, state, job_id, settled, fence FROM pollkit_jobs ORDER BY seq"
    )
    assert len(rows) == jobs_in_batch
    assert all(settled for *_, settled, _ in rows), "a job no runner finished"
    states: dict[str, int] = {}
    for _, state, *_ in rows:
        states[state] = states.get(state, 0) + 1
    in_doubt = [key for key, state, *_ in rows if state == "ambiguous"]
    assert states.get("done", 0) + len(in_doubt) == jobs_in_batch, states
    # A submit in doubt stays `ambiguous` in the journal (a killed runner reports nothing
    # else); the runners that live report theirs (the first twenty of each).
    reported = set(re.findall(r"^  (k\d{4}): its submit may have created a job", reports, re.M))
    assert reported <= set(in_doubt)
    jobs = {j["id"]: j for j in sim.stats()["jobs"]}
    done_ids = [job_id for _, state, job_id, *_ in rows if state == "done"]
    assert len(set(done_ids)) == len(done_ids)  # no two specs share a job
    assert set(done_ids) <= set(jobs)
    # Each spec created once: every job the simulator made is a done spec's, but for at most
    # one per submit in doubt.
    assert len(jobs) - len(done_ids) <= len(in_doubt)
    outputs = query(
        dsn,
        "SELECT j.job_id, o.idx, o.path, o.sha256 FROM pollkit_outputs o"
        " JOIN pollkit_jobs j USING (spec_key) ORDER BY 1, 2",
    )
    assert len(outputs) == sum(len(jobs[i]["outputs"]) for i in done_ids)
    for job_id, idx, path, digest in outputs:
        assert digest == jobs[job_id]["outputs"][idx]["sha256"]
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    return {**states, "reclaimed": sum(1 for *_, fence in rows if fence > 1)}


def test_two_runners_killed_the_survivor_finishes(
    runners: Runners, sim: ThreadedSimulator, postgres_dsn: str
) -> None:
    runners.start(3)
    wait_for(lambda: done_rows(postgres_dsn) >= JOBS // 5, "a fifth of the batch done")
    runners.children[0].kill()
    runners.children[0].wait(10)
    wait_for(lambda: done_rows(postgres_dsn) >= JOBS // 2, "half of the batch done")
    runners.children[1].kill()
    runners.children[1].wait(10)
    assert runners.wait(2) in (0, 1), runners.output(2)
    found = check_batch(runners, runners.output(2))
    assert found["reclaimed"] > 0  # the dead runners' jobs were taken over
    dead = [str(c.pid) for c in runners.children[:2]]
    # A dead runner keeps only the rows it finished before it died.
    owned = query(postgres_dsn, "SELECT owner, settled FROM pollkit_jobs WHERE owner IS NOT NULL")
    assert all(settled for owner, settled in owned if owner.split(":")[1] in dead)


def test_a_runner_frozen_past_its_lease_writes_nothing_over_the_new_owner(
    runners: Runners, sim: ThreadedSimulator, postgres_dsn: str
) -> None:
    runners.start(3, SMALL)
    frozen = runners.children[1]
    wait_for(lambda: frozen.pid in live_runner_ids(postgres_dsn), "the runner registered")
    rid = live_runner_ids(postgres_dsn)[frozen.pid]
    wait_for(
        lambda: (
            query(
                postgres_dsn,
                "SELECT count(*) FROM pollkit_jobs WHERE owner = %s AND NOT settled"
                " AND state = 'submitted'",
                rid,
            )[0][0]
            >= 20
        ),
        "the runner holds submitted jobs",
    )
    frozen.send_signal(signal.SIGSTOP)
    held = {
        key
        for (key,) in query(
            postgres_dsn, "SELECT spec_key FROM pollkit_jobs WHERE owner = %s AND NOT settled", rid
        )
    }
    # The others take its jobs once its lease lapses, and finish some of them.
    wait_for(
        lambda: (
            query(
                postgres_dsn,
                "SELECT count(*) FROM pollkit_jobs WHERE spec_key = ANY(%s) AND owner <> %s"
                " AND state = 'done'",
                list(held),
                rid,
            )[0][0]
            > 0
        ),
        "its jobs taken over",
    )
    frozen.send_signal(signal.SIGCONT)
    codes = [runners.wait(i) for i in range(3)]
    assert set(codes) <= {0, 1}, [runners.output(i) for i in range(3)]
    check_batch(runners, "".join(runners.output(i) for i in range(3)))
    refused = query(
        postgres_dsn, "SELECT refused_writes FROM pollkit_runners WHERE runner_id = %s", rid
    )
    assert refused[0][0] > 0
    # Its jobs that another claimed were finished by that one: it changed none of them.
    taken = query(
        postgres_dsn,
        "SELECT count(*) FROM pollkit_jobs WHERE spec_key = ANY(%s) AND owner = %s",
        list(held),
        rid,
    )
    assert taken[0][0] < len(held)
    assert "lost it" in runners.output(1)


def test_postgresql_restarted_mid_batch_the_runners_wait_and_go_on(
    runners: Runners, sim: ThreadedSimulator, postgres_dsn: str, postgres_server: PostgresServer
) -> None:
    runners.start(3, SMALL)
    wait_for(lambda: done_rows(postgres_dsn) >= SMALL // 4, "a quarter of the batch done")
    postgres_server.stop()
    time.sleep(1.0)  # the outage itself: runners must ride it out
    postgres_server.start()
    codes = [runners.wait(i) for i in range(3)]
    assert set(codes) <= {0, 1}, [runners.output(i) for i in range(3)]
    check_batch(runners, "".join(runners.output(i) for i in range(3)))
    assert "waiting for the server" in "".join(runners.output(i) for i in range(3))
