"""One batch, many runners: SQLite vs PostgreSQL journals, and 1, 2, 4 runners on PostgreSQL.

    .venv/bin/python -m benchmarks.bench_runners --jobs 10000 [--write-readme]

The same batch (one image per job) goes through `pollkit run` processes against the
simulator in a process of its own, with a fresh journal each time: one runner with SQLite, one
with PostgreSQL, then 2 and 4 runners sharing a PostgreSQL journal. Each runner's CPU and peak
RSS come from ``wait4``; statements and claims from the journal's own runner table. The ideal
wall time of K runners is one PostgreSQL runner's time divided by K (perfect scaling), but
never below the longest job's own life. A micro-benchmark then times one claim (64 rows of a
10,000-row journal) and one status write on the same server, sequentially on one connection,
for the estimate of what one server carries.

Needs PostgreSQL's server binaries (Debian's ``postgresql``); the server is the test suite's
throw-away one (``tests/postgres.py``), with fsync off: it measures pollkit's statements, not
the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from benchmarks.batch_report import machine, write_section
from benchmarks.simprocess import SimProcess
from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._postgres import PostgresJournal
from pollkit.batch.journal._records import canonical_json
from tests.postgres import PostgresServer

TIME_SCALE = 100.0  # renders of 0.06–0.23 s real: the journal's cost shows, not the waiting


@dataclass
class Outcome:
    label: str
    runners: int
    wall: float
    cpu: list[float]
    rss_mb: list[float]
    statements: int | None
    claims: int | None
    done: int


def write_batch(path: Path, jobs: int) -> None:
    lines = (
        json.dumps(
            {
                "endpoint": "ai-image-generator",
                "body": {"image_count": 1, "style": {"prompt": f"b{i}"}},
            }
        )
        for i in range(jobs)
    )
    path.write_text("\n".join(lines) + "\n")


def run_config(
    sim: SimProcess, batch: Path, work: Path, journal: str | None, runners: int, label: str
) -> Outcome:
    out = work / label.replace(" ", "-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_"))}
    env |= {"MAGIC_HOUR_API_KEY": sim.api_key, "MAGIC_HOUR_BASE_URL": sim.url}
    argv = [sys.executable, "-m", "pollkit", "run", str(batch), "--download-dir", str(out)]
    argv += ["--no-progress", "--concurrency", "64"]
    if journal is not None:
        argv += ["--journal", journal]
    started = time.monotonic()
    children = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(runners)
    ]
    cpu, rss = [], []
    for child in children:
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        assert child.stderr is not None
        err = child.stderr.read().decode(errors="replace")
        if child.returncode != 0:
            raise SystemExit(f"{label}: a runner exited {child.returncode}: {err[-2000:]}")
        cpu.append(usage.ru_utime + usage.ru_stime)
        rss.append(usage.ru_maxrss / 1024)
    wall = time.monotonic() - started
    statements = claimed = None
    if journal is not None and journal.startswith("postgresql://"):
        with psycopg.connect(journal) as db:
            row = db.execute("SELECT sum(statements), sum(claims) FROM pollkit_runners").fetchone()
            assert row is not None
            statements, claimed = int(row[0]), int(row[1])
            done = db.execute("SELECT count(*) FROM pollkit_jobs WHERE state = 'done'").fetchone()
            assert done is not None
            finished = int(done[0])
    else:
        finished = sum(1 for p in out.iterdir() if p.suffix == ".png")
    return Outcome(label, runners, wall, cpu, rss, statements, claimed, finished)


async def micro(dsn: str, rows: int = 10_000, rounds: int = 100) -> tuple[float, float]:
    """(ms per claim of 64 rows, ms per status write), sequential, one connection."""
    async with PostgresJournal(dsn, max_connections=1) as journal:
        await claims.load(
            journal, "bench", [(f"k{i}", canonical_json({"n": i}), f"job-{i}") for i in range(rows)]
        )
        await claims.register(journal, "bench", "h", 1, 3600.0)
        started = time.perf_counter()
        taken = []
        for _ in range(rounds):
            taken += await claims.claim(journal, "bench", 64, [c.key for c in taken])
        per_claim = (time.perf_counter() - started) / rounds * 1000
        journal.fences = {c.key: c.fence for c in taken}
        moment = time.time()
        started = time.perf_counter()
        for i, c in enumerate(taken[:2000]):
            observed = datetime.fromtimestamp(moment + i, timezone.utc)
            await journal.record_status(c.key, "rendering", "rendering", observed)
        per_write = (time.perf_counter() - started) / min(len(taken), 2000) * 1000
    return per_claim, per_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    server = PostgresServer()
    server.start()
    outcomes: list[Outcome] = []
    work = Path(tempfile.mkdtemp(prefix="bench-runners-"))
    longest = 23.0 / TIME_SCALE  # queue ≤ 3 s + render ≤ 20 s, simulated
    try:
        batch = work / "jobs.jsonl"
        write_batch(batch, args.jobs)
        with SimProcess("default", time_scale=TIME_SCALE, seed=1) as sim:
            plan: list[tuple[str, str | None, int]] = [
                ("SQLite, 1 runner", str(work / "journal.sqlite"), 1),
                ("PostgreSQL, 1 runner", server.new_database(), 1),
                ("PostgreSQL, 2 runners", server.new_database(), 2),
                ("PostgreSQL, 4 runners", server.new_database(), 4),
            ]
            for label, journal, runners in plan:
                print(f"{label} …", flush=True)
                outcomes.append(run_config(sim, batch, work, journal, runners, label))
        per_claim, per_write = asyncio.run(micro(server.new_database()))
    finally:
        server.stop("immediate")
        server.remove()
    report(outcomes, args.jobs, per_claim, per_write, longest, args.write_readme)


def report(
    outcomes: list[Outcome],
    jobs: int,
    per_claim: float,
    per_write: float,
    longest: float,
    write_readme: bool,
) -> None:
    one_pg = next(o for o in outcomes if o.label == "PostgreSQL, 1 runner")
    sqlite = outcomes[0]
    rows = [
        "| journal, runners | wall s | ideal s | × ideal | CPU ms/job | × SQLite CPU |"
        " statements/job | rows claimed/s | peak RSS MB per runner | jobs done |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        ideal = max(one_pg.wall / o.runners, longest) if o.statements is not None else o.wall
        cpu_job = sum(o.cpu) / jobs * 1000
        rows.append(
            f"| {o.label} | {o.wall:.1f} | {ideal:.1f} | {o.wall / ideal:.2f} | {cpu_job:.2f} |"
            f" {sum(o.cpu) / sum(sqlite.cpu):.2f} |"
            f" {'' if o.statements is None else f'{o.statements / jobs:.2f}'} |"
            f" {'' if o.claims is None else f'{o.claims / o.wall:.0f}'} |"
            f" {max(o.rss_mb):.0f} | {o.done}/{jobs} |"
        )
    table = "\n".join(rows)
    text = f"""## Runners sharing a batch (PostgreSQL journal)

```sh
.venv/bin/python -m benchmarks.bench_runners --jobs {jobs} --write-readme
```

{jobs} image jobs (one output each) through `pollkit run --concurrency 64` against the
simulator (default scenario at time scale {TIME_SCALE:g}) in a process of its own; a fresh
journal per line. The ideal of K PostgreSQL runners is one PostgreSQL runner's wall time / K,
but never below the longest job's life; SQLite's line is its own ideal. CPU is every runner's
user + system seconds (`wait4`); statements and claims are the runners' own counts (heartbeats
and idle claim rounds included). {machine([("pollkit", "pollkit"), ("psycopg", "psycopg")])}

{table}

Micro-benchmark on the same server, one connection, sequential: a claim of 64 rows from a
10,000-row journal takes {per_claim:.2f} ms; one status write {per_write:.2f} ms.
"""
    print(text)
    if write_readme:
        write_section("## Runners sharing a batch (PostgreSQL journal)", text)


if __name__ == "__main__":
    main()
