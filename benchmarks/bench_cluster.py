"""A batch on a Dask LocalCluster of 1, 2 and 4 workers vs one `pollkit run` process.

    .venv/bin/python -m benchmarks.bench_cluster --jobs 2000 [--write-readme]
    .venv/bin/python -m benchmarks.bench_cluster --jobs 100 --video-mib 4 --workers 1,2

``--video-mib M`` makes every job a video whose one output is M MiB, so that a batch is bound
by the bytes it moves rather than by the jobs' lives: the figure to hold against ``put_file``.

The same batch (one image per job) goes, with a fresh PostgreSQL journal each time, through:

- **one process**: ``pollkit run --journal postgresql://… --concurrency 64`` (a child; its CPU
  and peak RSS from ``wait4``), to a local folder and to ``s3://`` (moto);
- **the cluster**: `pollkit.cluster.run_on_cluster` on a fresh ``LocalCluster`` of K worker
  processes (one thread each), K = 1, 2, 4, each runner at concurrency 64, to a local folder
  and to ``s3://``. CPU is every worker's user + system seconds during the batch (their
  ``getrusage`` before and after, so the workers' own start is not counted but the plugin's
  set-up is) plus this process's (the driver and Dask's scheduler); the nannies are left out.
  Peak RSS is each worker's ``ru_maxrss``.

The simulator (default scenario, time scale 100) and moto's S3 server each run in a process of
their own. The ideal wall time of K workers is the one-process time / K, never below the
longest job's life. Statements per job: the runners' own count (heartbeats and idle claims
included), and every transaction the database committed during the batch (the driver's
reads of finished jobs included). Bytes per second to S3: the objects' bytes over the batch's
wall time, against s3fs ``put_file`` of the one-process run's files from 64 threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from distributed import Client, LocalCluster

from benchmarks.batch_report import machine, write_section
from benchmarks.bench_runners import TIME_SCALE, write_batch
from benchmarks.bench_s3 import MotoProcess, options
from benchmarks.simprocess import SimProcess
from pollkit import DownloadPolicy, MagicHour
from pollkit.batch._jsonl import read_batch
from pollkit.cluster import run_on_cluster
from tests.postgres import PostgresServer

CONCURRENCY = 64
LONGEST = 23.0 / TIME_SCALE  # queue ≤ 3 s + render ≤ 20 s, simulated


@dataclass
class Outcome:
    label: str
    workers: int  # 0: one `pollkit run` process
    store: str
    wall: float
    cpu: float
    driver_cpu: float  # of `cpu`: the driver's process (and Dask's scheduler, in it)
    rss_mb: list[float]
    runner_statements: int
    transactions: int
    done: int
    bytes: int


def _usage() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_maxrss / 1024


def committed(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SELECT pg_stat_force_next_flush()")
        row = db.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0])


def journal_totals(dsn: str) -> tuple[int, int, int]:
    """(runner statements, jobs done, bytes recorded)."""
    with psycopg.connect(dsn) as db:
        statements = db.execute("SELECT coalesce(sum(statements), 0) FROM pollkit_runners")
        done = db.execute("SELECT count(*) FROM pollkit_jobs WHERE state = 'done'")
        size = db.execute("SELECT coalesce(sum(size), 0) FROM pollkit_outputs")
        return (
            int(statements.fetchone()[0]),  # type: ignore[index]
            int(done.fetchone()[0]),  # type: ignore[index]
            int(size.fetchone()[0]),  # type: ignore[index]
        )


def one_process(
    sim: SimProcess, batch: Path, dsn: str, target: str, endpoint: str, work: Path, label: str
) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_"))}
    env |= {
        "MAGIC_HOUR_API_KEY": sim.api_key,
        "MAGIC_HOUR_BASE_URL": sim.url,
        "POLLKIT_NO_CACHE": "1",
        "XDG_CACHE_HOME": str(work / "cache"),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    argv = [sys.executable, "-m", "pollkit", "run", str(batch), "--download-dir", target]
    argv += ["--no-progress", "--concurrency", str(CONCURRENCY), "--journal", dsn]
    before = committed(dsn)
    started = time.monotonic()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    assert child.stderr is not None
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label}: exited {status}: {child.stderr.read().decode()[-2000:]}")
    statements, done, size = journal_totals(dsn)
    return Outcome(
        label, 0, "s3" if target.startswith("s3://") else "disk", wall,
        usage.ru_utime + usage.ru_stime, 0.0, [usage.ru_maxrss / 1024], statements,
        committed(dsn) - before, done, size,
    )  # fmt: skip


def on_cluster(
    sim: SimProcess,
    batch: Path,
    dsn: str,
    target: str,
    endpoint: str,
    work: Path,
    workers: int,
    label: str,
) -> Outcome:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    items = read_batch(batch.read_text(), provider)
    download = DownloadPolicy(
        spool_directory=work / f"spool-{uuid.uuid4().hex[:6]}", storage_options=options(endpoint)
    )
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={"POLLKIT_NO_CACHE": "1"},
    ) as cluster, Client(cluster) as dask:  # fmt: skip
        before = dask.run(_usage)
        own_before = _usage()[0]
        committed_before = committed(dsn)
        started = time.monotonic()

        async def drive() -> int:
            count = 0
            async for _ in run_on_cluster(
                cluster.scheduler_address,
                items,
                provider=provider,
                journal=dsn,
                download_directory=target,
                download=download,
                concurrency=CONCURRENCY,
            ):
                count += 1
            return count

        yielded = asyncio.run(drive())
        wall = time.monotonic() - started
        own = _usage()[0] - own_before
        after = dask.run(_usage)
    assert yielded == len(items), (yielded, len(items))
    cpu = own + sum(after[w][0] - before[w][0] for w in after if w in before)
    statements, done, size = journal_totals(dsn)
    return Outcome(
        label, workers, "s3" if target.startswith("s3://") else "disk", wall, cpu, own,
        [after[w][1] for w in after], statements, committed(dsn) - committed_before, done, size,
    )  # fmt: skip


def write_video_batch(path: Path, jobs: int) -> None:
    lines = (
        json.dumps(
            {"endpoint": "text-to-video", "body": {"end_seconds": 5, "style": {"prompt": f"v{i}"}}}
        )
        for i in range(jobs)
    )
    path.write_text("\n".join(lines) + "\n")


def put_file_rate(folder: Path, endpoint: str, bucket: str) -> tuple[float, int]:
    """(bytes/s, bytes) of s3fs put_file of every file in `folder`, from 64 threads."""
    import s3fs

    fs = s3fs.S3FileSystem(**options(endpoint), skip_instance_cache=True)
    files = [p for p in folder.iterdir() if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda p: fs.put_file(str(p), f"{bucket}/putfile/{p.name}"), files))
    return total / (time.perf_counter() - started), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--video-mib", type=float, default=0.0, help="video jobs of this size")
    parser.add_argument("--stores", default="disk,s3", help="where outputs go: disk, s3 or both")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    if (args.video_mib or args.stores != "disk,s3") and args.write_readme:
        parser.error("--write-readme rewrites the whole section: not with --video-mib or --stores")
    video_bytes = int(args.video_mib * (1 << 20)) or None
    counts = [int(w) for w in args.workers.split(",")]
    stores = args.stores.split(",")
    if not set(stores) <= {"disk", "s3"}:
        parser.error(f"--stores: disk, s3 or both, not {args.stores!r}")
    server = PostgresServer()
    server.start()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    outcomes: list[Outcome] = []
    try:
        batch = work / "jobs.jsonl"
        if video_bytes:
            write_video_batch(batch, args.jobs)
        else:
            write_batch(batch, args.jobs)
        with (
            SimProcess("default", time_scale=TIME_SCALE, seed=1, video_bytes=video_bytes) as sim,
            MotoProcess() as moto,
        ):
            import boto3

            s3 = boto3.client(
                "s3", endpoint_url=moto.url, aws_access_key_id="bench",
                aws_secret_access_key="bench", region_name="us-east-1",
            )  # fmt: skip
            for store in stores:
                for workers in [0, *counts]:
                    label = f"{'one process' if not workers else f'{workers} workers'}, {store}"
                    if store == "s3":
                        bucket = f"bench-{uuid.uuid4().hex[:8]}"
                        s3.create_bucket(Bucket=bucket)
                        target = f"s3://{bucket}/run/"
                    else:
                        target = str(work / label.replace(" ", "-").replace(",", ""))
                    print(f"{label} …", flush=True)
                    dsn = server.new_database()
                    if workers:
                        outcome = on_cluster(
                            sim, batch, dsn, target, moto.url, work, workers, label
                        )
                    else:
                        outcome = one_process(sim, batch, dsn, target, moto.url, work, label)
                    outcomes.append(outcome)
                    print(
                        f"  {outcome.wall:.1f} s, {outcome.cpu / args.jobs * 1000:.2f} ms CPU/job"
                    )
            rate = 0.0  # put_file of the one-process disk run's files: needs both stores
            if set(stores) == {"disk", "s3"}:
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                s3.create_bucket(Bucket=bucket)
                rate, _ = put_file_rate(work / "one-process-disk", moto.url, bucket)
                print(f"s3fs put_file: {rate / (1 << 20):.2f} MiB/s", flush=True)
    finally:
        server.stop("immediate")
        server.remove()
    report(outcomes, args.jobs, rate, args.write_readme, args.video_mib)


def report(
    outcomes: list[Outcome], jobs: int, put_rate: float, write_readme: bool, video_mib: float = 0.0
) -> None:
    rows = [
        "| run | wall s | ideal s | × ideal | CPU ms/job (driver) | × one process | statements/job"
        " (runners / all) | peak RSS MB per worker | MiB/s to store | × put_file | jobs done |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        base = next(b for b in outcomes if b.workers == 0 and b.store == o.store)
        ideal = max(base.wall / max(o.workers, 1), LONGEST)
        rate = o.bytes / o.wall
        against = f"{rate / put_rate:.2f}" if put_rate and o.store == "s3" else ""
        rows.append(
            f"| {o.label} | {o.wall:.1f} | {ideal:.1f} | {o.wall / ideal:.2f} |"
            f" {o.cpu / jobs * 1000:.2f} ({o.driver_cpu / jobs * 1000:.2f}) |"
            f" {o.cpu / base.cpu:.2f} |"
            f" {o.runner_statements / jobs:.2f} / {o.transactions / jobs:.2f} |"
            f" {statistics.mean(o.rss_mb):.0f} (max {max(o.rss_mb):.0f}) |"
            f" {rate / (1 << 20):.2f} | {against} |"
            f" {o.done}/{jobs} |"
        )
    table = "\n".join(rows)
    what = "image jobs (one output each)"
    if video_mib:
        what = f"video jobs ({video_mib:g} MiB output each)"
    text = f"""## A batch on a Dask cluster

```sh
.venv/bin/python -m benchmarks.bench_cluster --jobs {jobs} --write-readme
```

{jobs} {what} against the simulator (default scenario at time scale
{TIME_SCALE:g}) in a process of its own, a fresh PostgreSQL journal per line: one `pollkit run`
process, then `run_on_cluster` on a fresh LocalCluster of 1, 2 and 4 worker processes (one
thread, one runner each), at concurrency {CONCURRENCY} per runner; outputs to a local folder,
then to moto's S3 server (a process of its own). CPU of the cluster rows: the workers during the
batch plus the driver's process (which also runs Dask's scheduler). s3fs `put_file` of the
one-process run's files from {CONCURRENCY} threads: {put_rate / (1 << 20):.2f} MiB/s.
{machine([("pollkit", "pollkit"), ("distributed", "distributed"), ("s3fs", "s3fs")])}

{table}
"""
    print(text)
    if write_readme:
        write_section("## A batch on a Dask cluster", text)


if __name__ == "__main__":
    main()
