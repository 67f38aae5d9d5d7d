"""check_result, pollkit vs the official magic-hour SDK, on the same simulated batch.

    .venv/bin/python -m benchmarks.bench_check_result [--jobs 40] [--time-scale 4] [--seed 1]

Both clients wait for the same kind of image jobs (the default scenario: queue 1–3 s, render
5–20 s, simulated) and download their outputs into one directory, concurrently. The simulator
runs in a process of its own, its clock `--time-scale` times faster than real time, and both
clients' intervals are divided by the same factor (the SDK's 0.5 s fixed interval, pollkit's
default cadence), so every figure is in simulated seconds: what it would be against the real API.
Keep jobs / (0.5 / time scale) well under what one core serves (~1,000 requests/s), or the run
measures CPU saturation instead of polling.

Measured, per client: status requests per job (the simulator's own count), detection lag (from
the server-side completion to check_result returning, simulated seconds), and how many of the
expected files are on disk byte-exact (the simulator publishes every output's sha256).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import magic_hour

import pollkit
from benchmarks.simprocess import SimProcess

SPEC: dict[str, Any] = {
    "tool": "ai-image-generator",
    "image_count": 2,
    "style": {"prompt": "benchmark"},
}
SDK_INTERVAL = 0.5  # the SDK's default MAGIC_HOUR_POLL_INTERVAL, in real-API seconds


@dataclass
class Run:
    client: str
    requests_per_job: float
    lag_p50: float
    lag_p95: float
    files_ok: int
    files_expected: int
    wall: float


def _expected(stats: dict[str, Any], ids: list[str]) -> dict[str, str]:
    """sha256 → output name of every output of the given jobs."""
    return {
        o["sha256"]: f"{j['id']}/{o['name']}"
        for j in stats["jobs"]
        if j["id"] in ids
        for o in j["outputs"]
    }


def _files_ok(directory: Path, expected: dict[str, str]) -> int:
    found = {hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir() if p.is_file()}
    return len(found & set(expected))


async def _submit(sim: SimProcess, count: int) -> list[str]:
    return [s.job_id for s in await _submissions(sim, count)]


async def _submissions(sim: SimProcess, count: int) -> list[Any]:
    provider = pollkit.MagicHour(api_key=sim.api_key, base_url=sim.url)
    async with pollkit.AsyncClient(provider, learn=False) as client:
        return [await client.submit(SPEC) for _ in range(count)]


def _summarise(
    name: str, sim: SimProcess, ids: list[str], returned: dict[str, float], out: Path, wall: float
) -> Run:
    stats = sim.stats()
    jobs = {j["id"]: j for j in stats["jobs"] if j["id"] in ids}
    lags = sorted(returned[i] - jobs[i]["finished_at"] for i in ids)
    expected = _expected(stats, ids)
    return Run(
        client=name,
        requests_per_job=sum(j["status_requests"] for j in jobs.values()) / len(ids),
        lag_p50=statistics.median(lags),
        lag_p95=lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))],
        files_ok=_files_ok(out, expected),
        files_expected=len(expected),
        wall=wall,
    )


async def bench_pollkit(sim: SimProcess, jobs: int, out: Path, name: str = "pollkit") -> Run:
    default = pollkit.Cadence()
    cadence = pollkit.Cadence(
        initial=default.initial / sim.time_scale,
        maximum=default.maximum / sim.time_scale,
        timeout=3600,
    )
    submissions = await _submissions(sim, jobs)
    ids = [s.job_id for s in submissions]
    provider = pollkit.MagicHour(api_key=sim.api_key, base_url=sim.url)
    returned: dict[str, float] = {}
    started = time.perf_counter()
    async with pollkit.AsyncClient(provider, cadence=cadence, seed=1) as client:

        async def one(submission: Any) -> None:
            # With the submit's time, the job's age is known: what pollkit learned about
            # jobs of this kind (the cache) says when to poll it.
            result = await client.check_result(
                submission.job_id,
                download_directory=out,
                kind="image",
                submitted_at=submission.submitted_at,
            )
            returned[submission.job_id] = sim.now()
            assert result.ok

        await asyncio.gather(*(one(s) for s in submissions))
    return _summarise(name, sim, ids, returned, out, time.perf_counter() - started)


async def bench_sdk(sim: SimProcess, jobs: int, out: Path) -> Run:
    os.environ["MAGIC_HOUR_POLL_INTERVAL"] = str(SDK_INTERVAL / sim.time_scale)
    ids = await _submit(sim, jobs)
    returned: dict[str, float] = {}
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30) as transport:
        sdk = magic_hour.AsyncClient(token=sim.api_key, base_url=sim.url, httpx_client=transport)

        async def one(job_id: str) -> None:
            await sdk.v1.image_projects.check_result(
                job_id,
                wait_for_completion=True,
                download_outputs=True,
                download_directory=str(out),
            )
            returned[job_id] = sim.now()

        await asyncio.gather(*(one(i) for i in ids))
    return _summarise("magic-hour SDK", sim, ids, returned, out, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--time-scale", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # What pollkit learns stays in this directory, never in the user's cache: the cold
        # run starts with nothing (other jobs of the same scenario, seed + 1000) and leaves
        # its durations for the warm one, measured on the SDK's jobs.
        os.environ["POLLKIT_CACHE_DIR"] = str(Path(tmp) / "pollkit-cache")
        plan = (
            ("pollkit, cold cache", args.seed + 1000, bench_pollkit),
            ("pollkit, warm cache", args.seed, bench_pollkit),
            ("magic-hour SDK", args.seed, bench_sdk),
        )
        for name, seed, bench in plan:
            out = Path(tmp) / name.replace(" ", "-").replace(",", "")
            out.mkdir()
            # A fresh simulator per client; the same seed gives the same jobs.
            with SimProcess(time_scale=args.time_scale, seed=seed) as sim:
                if bench is bench_pollkit:
                    runs.append(asyncio.run(bench_pollkit(sim, args.jobs, out, name)))
                else:
                    runs.append(asyncio.run(bench(sim, args.jobs, out)))
    print(
        f"{args.jobs} image jobs × 2 outputs, time scale {args.time_scale:g}, seed {args.seed}; "
        "lag in simulated seconds"
    )
    from benchmarks.polling_bound import bound_for

    bound = bound_for("default", 1.0, 3.0, 0.1).requests
    print(f"polling bound of the default scenario (lag p50 ≤ 1 s, p95 ≤ 3 s): {bound:.2f} req/job")
    header = f"{'client':<22}{'req/job':>9}{'× bound':>9}{'lag p50':>9}{'lag p95':>9}"
    print(f"{header}{'files ok':>12}{'wall s':>8}")
    for r in runs:
        files = f"{r.files_ok}/{r.files_expected}"
        print(
            f"{r.client:<22}{r.requests_per_job:>9.1f}{r.requests_per_job / bound:>9.2f}"
            f"{r.lag_p50:>9.2f}{r.lag_p95:>9.2f}{files:>12}{r.wall:>8.1f}"
        )
    *ours, theirs = runs
    for mine in ours:
        print(
            f"ratio {mine.client}/SDK: requests "
            f"{mine.requests_per_job / theirs.requests_per_job:.2f}, "
            f"lag p50 {mine.lag_p50 / theirs.lag_p50:.2f}"
        )


if __name__ == "__main__":
    main()
