"""Scale: 10,000 jobs tracked at once in one process, pollkit `run` vs a bare aiohttp GET loop.

    .venv/bin/python -m benchmarks.bench_scale [--jobs 10000] [--window 60] [--seed 1]
        [--write-readme]

The simulator's ``long`` scenario (real time, renders of 10–20 minutes) runs in a process of
its own, so no job finishes while it is measured. The benchmark submits `--jobs` image projects
to it (concurrent aiohttp POSTs from this process), then runs two children, one after the
other, each in a process of its own:

- pollkit: `AsyncClient.run(job_ids, download_directory=…, journal=False)` tracking every job
  for `--window` seconds, then cancelled;
- bare: a plain aiohttp loop making as many status requests for the same ids as pollkit made,
  paced evenly over the same window, 16 in flight (pollkit's default), each reply parsed as
  JSON.

Figures: status requests (the simulator's count of ``GET /v1/...``), the child's CPU seconds
during the window (start-up left out), CPU per status request and its ratio to the bare loop's,
peak RSS of the whole child and per tracked job. Targets for pollkit (reported, never asserted):
peak RSS < 300 MB, CPU per status request ≤ 1.5× the bare loop's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.batch_report import machine, process_cpu, write_section
from benchmarks.dl_clients import measure
from benchmarks.simprocess import SimProcess

SECTION = "## Scale: 10,000 jobs in one process"
CHILD = Path(__file__).with_name("batch_scale_child.py")
SPEC: dict[str, Any] = {"image_count": 1, "style": {"prompt": "benchmark"}}
RSS_TARGET = 300e6
CPU_TARGET = 1.5


@dataclass(frozen=True, slots=True)
class Row:
    """One child's window."""

    client: str
    requests: int
    cpu: float
    wall: float
    rss: int
    sim_cpu: float
    jobs: int
    note: str = ""

    @property
    def cpu_per_request(self) -> float:
        """Client CPU seconds per status request."""
        return self.cpu / self.requests if self.requests else float("nan")


async def _submit(url: str, api_key: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {api_key}"}
    gate = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one() -> str:
            async with (
                gate,
                session.post(f"{url}/v1/ai-image-generator", json=SPEC, headers=headers) as reply,
            ):
                reply.raise_for_status()
                return str((await reply.json())["id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _status_requests(stats: dict[str, Any]) -> int:
    routes: dict[str, int] = stats["requests"]["by_route"]
    return sum(n for route, n in routes.items() if route.startswith("GET /v1/"))


def _run(
    sim: SimProcess, client: str, ids_path: Path, window: float, jobs: int, *extra: str
) -> Row:
    report = ids_path.with_name(f"{client}.json")
    argv = [sys.executable, str(CHILD), client, sim.url, sim.api_key, str(ids_path)]
    sim_pid = sim._proc.pid  # its CPU tells whether the server, not the client, was the limit
    before, sim_before = _status_requests(sim.stats()), process_cpu(sim_pid)
    measured = measure([*argv, str(window), str(report), *extra], timeout=window + 180)
    sim_cpu = process_cpu(sim_pid) - sim_before
    requests = _status_requests(sim.stats()) - before
    if measured.timed_out or measured.exit_code != 0 or not report.exists():
        sys.exit(f"{client} failed (exit {measured.exit_code}): {measured.stderr[-800:]}")
    document = json.loads(report.read_text())
    note = ""
    if document.get("finished"):
        note = f"{document['finished']} jobs ended during the window"
    if document.get("errors"):
        note = f"{document['errors']} requests failed"
    return Row(
        client=client,
        requests=requests,
        cpu=float(document["cpu"]),
        wall=float(document["wall"]),
        rss=measured.max_rss,
        sim_cpu=sim_cpu,
        jobs=jobs,
        note=note,
    )


def table(rows: list[Row]) -> str:
    """The markdown table."""
    bare = next(r for r in rows if r.client == "bare")
    lines = [
        "| client | status requests | requests/s | CPU s | CPU load | simulator load "
        "| CPU ms / request | × bare loop | peak RSS MB | peak RSS / job KB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = {"pollkit": "pollkit run", "bare": "aiohttp GET loop"}
    for r in rows:
        ratio = r.cpu_per_request / bare.cpu_per_request
        lines.append(
            f"| {labels[r.client]} | {r.requests} | {r.requests / r.wall:.0f} | {r.cpu:.1f} "
            f"| {r.cpu / r.wall:.0%} | {r.sim_cpu / r.wall:.0%} "
            f"| {r.cpu_per_request * 1e3:.3f} | {ratio:.2f} | {r.rss / 1e6:.0f} "
            f"| {r.rss / r.jobs / 1e3:.1f} |"
        )
    return "\n".join(lines)


def notes(rows: list[Row]) -> list[str]:
    """Targets and anything odd, as README bullets."""
    ours = next(r for r in rows if r.client == "pollkit")
    bare = next(r for r in rows if r.client == "bare")
    ratio = ours.cpu_per_request / bare.cpu_per_request
    out = [
        f"pollkit's peak RSS {ours.rss / 1e6:.0f} MB (target < {RSS_TARGET / 1e6:.0f} MB): "
        f"{'met' if ours.rss < RSS_TARGET else '**missed**'}; the bare loop, holding the same "
        f"ids, peaks at {bare.rss / 1e6:.0f} MB.",
        f"pollkit's CPU per status request {ratio:.2f}× the bare loop's (target ≤ "
        f"{CPU_TARGET:g}×): {'met' if ratio <= CPU_TARGET else '**missed**'}.",
    ]
    for r in rows:
        if r.note:
            out.append(f"{r.client}: {r.note}.")
        if max(r.cpu, r.sim_cpu) / r.wall >= 0.8:
            out.append(
                f"{r.client}: {'the client' if r.cpu >= r.sim_cpu else 'the simulator'} used "
                f"{max(r.cpu, r.sim_cpu) / r.wall:.0%} of a core: the request rate was limited "
                "by CPU."
            )
    return [f"- {line}" for line in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds of tracking")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
        SimProcess("long", seed=args.seed) as sim,
    ):
        started = time.perf_counter()
        ids = asyncio.run(_submit(sim.url, sim.api_key, args.jobs))
        print(
            f"submitted {len(ids)} jobs in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        ids_path = Path(tmp) / "ids.txt"
        ids_path.write_text("\n".join(ids))
        ours = _run(sim, "pollkit", ids_path, args.window, args.jobs)
        print(f"pollkit: {ours.requests} status requests", file=sys.stderr, flush=True)
        bare = _run(sim, "bare", ids_path, args.window, args.jobs, str(ours.requests))
    rows = [ours, bare]
    text = table(rows)
    print(f"\n{text}\n")
    print("\n".join(notes(rows)))
    if args.write_readme:
        write_section(SECTION, readme_section(args, rows))
        print(f"wrote {SECTION!r}", file=sys.stderr)


def readme_section(args: argparse.Namespace, rows: list[Row]) -> str:
    """The README section: command, setup, machine, table, notes."""
    command = (
        f".venv/bin/python -m benchmarks.bench_scale --jobs {args.jobs} "
        f"--window {args.window:g} --seed {args.seed} --write-readme"
    )
    setup = (
        f"{args.jobs:,} image projects on the simulator's `long` scenario (real time, renders of "
        f"10–20 minutes, so none finishes while measured), tracked for {args.window:g} s by each "
        "client in a process of its own: pollkit `AsyncClient.run(job_ids, "
        "download_directory=…, journal=False)` with its default cadence and concurrency, "
        "cancelled at the end of the window; then a bare aiohttp loop making as many status "
        "requests for the same ids, paced evenly over the same window, 16 in flight, each reply "
        "parsed as JSON. Status requests: the simulator's count of `GET /v1/...`; CPU: the "
        "child's user + system seconds during the window (start-up left out); peak RSS: the "
        "whole child. Targets for pollkit: peak RSS < 300 MB, CPU per status request ≤ 1.5× "
        "the bare loop's."
    )
    packages = [("pollkit", "pollkit"), ("aiohttp", "aiohttp")]
    lines = [SECTION, "", "```sh", command, "```", "", setup, "", machine(packages), ""]
    return "\n".join([*lines, table(rows), "", *notes(rows)]) + "\n"


if __name__ == "__main__":
    main()
