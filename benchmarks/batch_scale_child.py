"""One client of the scale benchmark, run as a process of its own (see bench_scale.py).

    python benchmarks/batch_scale_child.py pollkit URL API_KEY IDS WINDOW REPORT
    python benchmarks/batch_scale_child.py bare URL API_KEY IDS WINDOW REPORT COUNT

``pollkit`` tracks every job id listed in the file IDS (one a line) with `AsyncClient.run` for
WINDOW seconds, then cancels the batch. ``bare`` makes COUNT status requests for the same ids in
turn, paced evenly over WINDOW seconds, 16 in flight at most (pollkit's default concurrency),
each reply read and parsed as JSON: the least a poller has to do per request. Both write to
REPORT the CPU seconds (user + system) and wall seconds of that part alone, so that start-up
is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

IN_FLIGHT = 16


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def track_pollkit(url: str, api_key: str, ids: list[str], window: float) -> dict[str, Any]:
    import pollkit

    provider = pollkit.MagicHour(api_key=api_key, base_url=url)
    finished = 0
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        cpu, started = _cpu(), time.monotonic()
        async with pollkit.AsyncClient(provider) as client:

            async def consume() -> None:
                nonlocal finished
                async for _ in client.run(ids, download_directory=directory, journal=False):
                    finished += 1

            task = asyncio.create_task(consume())
            await asyncio.sleep(window)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return {"cpu": _cpu() - cpu, "wall": time.monotonic() - started, "finished": finished}


async def track_bare(
    url: str, api_key: str, ids: list[str], window: float, count: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    numbers = itertools.count()
    interval = window / max(count, 1)
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        cpu, started = _cpu(), time.monotonic()

        async def worker() -> None:
            nonlocal errors
            while (number := next(numbers)) < count:
                delay = started + number * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                job_id = ids[number % len(ids)]
                async with session.get(
                    f"{url}/v1/image-projects/{job_id}", headers=headers
                ) as reply:
                    project = await reply.json()
                if reply.status != 200 or "status" not in project:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return {"cpu": _cpu() - cpu, "wall": time.monotonic() - started, "errors": errors}


def main(argv: list[str]) -> None:
    client, url, api_key, ids_path, window, report, *rest = argv
    ids = Path(ids_path).read_text().split()
    if client == "pollkit":
        document = asyncio.run(track_pollkit(url, api_key, ids, float(window)))
    else:
        document = asyncio.run(track_bare(url, api_key, ids, float(window), int(rest[0])))
    Path(report).write_text(json.dumps(document))


if __name__ == "__main__":
    main(sys.argv[1:])
