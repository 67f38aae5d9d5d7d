"""One client of the batch benchmark, run as a process of its own (see bench_batch.py).

    python benchmarks/batch_child.py CLIENT URL API_KEY JOBS DIRECTORY REPORT

CLIENT is ``pollkit`` (`AsyncClient.run` over the job ids, no journal), ``pollkit-journal``
(the same with its default journal), ``pollkit-run`` (`run` over the specs: pollkit submits
them itself, journal on, so it knows each job's age), ``pollkit-check`` (the stub used
before `run` existed: `check_result` per job under ``asyncio.gather``), ``sdk`` (the official
magic-hour SDK's `check_result` per job under ``asyncio.gather``) or ``fixed`` (a plain aiohttp
loop, one coroutine per job, polling every second).

Every client first submits JOBS image projects with the same plain aiohttp POSTs, then waits
for all of them and downloads their outputs under DIRECTORY. It writes one JSON document to
REPORT: the job ids, and per job, in the simulator's clock, when the client first saw it
terminal (``noticed``) and when it was handed over with its files on disk (``delivered``), plus
the CPU seconds spent before the wait began (start-up and submission), so that the benchmark
can subtract them from what ``wait4`` says about the whole process.

Times: the simulator's clock maps onto wall time (at time scale 1) as ``wall_start + now``; one
``/_sim/stats`` read at start-up, before any job exists, anchors the conversion.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

SPEC: dict[str, Any] = {"image_count": 1, "style": {"prompt": "benchmark"}}
SUBMIT_CONCURRENCY = 32
FIXED_INTERVAL = 1.0
TERMINAL = frozenset({"complete", "error", "canceled"})


class Batch:
    """What one child knows: where the simulator is, its clock, and what it saw."""

    def __init__(self, url: str, api_key: str, directory: Path) -> None:
        self.url = url
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.directory = directory
        self.ids: list[str] = []
        self.noticed: dict[str, float] = {}  # job id -> wall time
        self.delivered: dict[str, float] = {}
        self.files: dict[str, list[str]] = {}
        self._anchor = (0.0, 0.0)  # (wall, simulated)

    def sim(self, wall: float) -> float:
        """The simulated time of a wall time."""
        real, simulated = self._anchor
        return simulated + (wall - real)

    async def anchor(self, session: aiohttp.ClientSession) -> None:
        before = time.time()
        async with session.get(f"{self.url}/_sim/stats") as reply:
            stats = await reply.json()
        after = time.time()
        self._anchor = ((before + after) / 2, float(stats["now"]))

    async def submit(self, session: aiohttp.ClientSession, count: int) -> None:
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def one() -> str:
            async with (
                gate,
                session.post(
                    f"{self.url}/v1/ai-image-generator", json=SPEC, headers=self.headers
                ) as reply,
            ):
                reply.raise_for_status()
                body = await reply.json()
                return str(body["id"])

        self.ids = list(await asyncio.gather(*(one() for _ in range(count))))


async def wait_pollkit(batch: Batch, *, journal: bool) -> None:
    import pollkit

    provider = pollkit.MagicHour(api_key=batch.api_key, base_url=batch.url)
    async with pollkit.AsyncClient(provider) as client:
        results = client.run(batch.ids, download_directory=batch.directory, journal=journal)
        async for result in results:
            now = time.time()
            noticed = result.noticed_at or result.finished_at
            batch.noticed[result.job_id] = noticed.timestamp() if noticed else now
            batch.delivered[result.job_id] = now
            batch.files[result.job_id] = [str(p) for p in result.downloaded_paths]


async def run_pollkit(batch: Batch, count: int, *, journal: bool = True) -> None:
    """`run` over the specs: pollkit submits the jobs itself (journal on), so it knows when
    each was submitted and polls it by its age."""
    import pollkit

    provider = pollkit.MagicHour(api_key=batch.api_key, base_url=batch.url)
    async with pollkit.AsyncClient(provider) as client:
        specs = [(f"job-{i}", {"tool": "ai-image-generator", **SPEC}) for i in range(count)]
        results = client.run(specs, download_directory=batch.directory, journal=journal)
        async for result in results:
            now = time.time()
            job_id = result.job_id
            batch.ids.append(job_id)
            noticed = result.noticed_at or result.finished_at
            batch.noticed[job_id] = noticed.timestamp() if noticed else now
            batch.delivered[job_id] = now
            batch.files[job_id] = [str(p) for p in result.downloaded_paths]


async def wait_pollkit_check(batch: Batch) -> None:
    import pollkit

    provider = pollkit.MagicHour(api_key=batch.api_key, base_url=batch.url)
    async with pollkit.AsyncClient(provider) as client:

        async def one(job_id: str) -> None:
            result = await client.check_result(
                job_id, download_directory=batch.directory, kind="image"
            )
            now = time.time()
            noticed = result.noticed_at or result.finished_at
            batch.noticed[job_id] = noticed.timestamp() if noticed else now
            batch.delivered[job_id] = now
            batch.files[job_id] = [str(p) for p in result.downloaded_paths]

        await asyncio.gather(*(one(i) for i in batch.ids))


async def wait_sdk(batch: Batch) -> None:
    import httpx
    import magic_hour  # type: ignore[import-untyped]  # the SDK ships no py.typed

    prefix = "/v1/image-projects/"

    async def on_response(response: httpx.Response) -> None:
        # The SDK stops polling a project once it reads it terminal, so the last status reply
        # per project is the one that showed it finished: that is when the SDK noticed.
        path = response.request.url.path
        if response.request.method == "GET" and path.startswith(prefix):
            batch.noticed[path[len(prefix) :]] = time.time()

    # The client the SDK builds by default (timeout 60 s), plus the hook.
    async with httpx.AsyncClient(timeout=60, event_hooks={"response": [on_response]}) as http:
        sdk = magic_hour.AsyncClient(token=batch.api_key, base_url=batch.url, httpx_client=http)

        async def one(job_id: str) -> None:
            # The SDK names files after the URL (output-0.png in every project): one directory
            # per project keeps them apart.
            directory = batch.directory / job_id
            directory.mkdir()
            reply = await sdk.v1.image_projects.check_result(
                job_id,
                wait_for_completion=True,
                download_outputs=True,
                download_directory=str(directory),
            )
            batch.delivered[job_id] = time.time()
            batch.files[job_id] = list(reply.downloaded_paths or [])

        await asyncio.gather(*(one(i) for i in batch.ids))


async def wait_fixed(batch: Batch, session: aiohttp.ClientSession) -> None:
    async def one(job_id: str) -> None:
        while True:
            async with session.get(
                f"{batch.url}/v1/image-projects/{job_id}", headers=batch.headers
            ) as reply:
                reply.raise_for_status()
                project = await reply.json()
            if project["status"] in TERMINAL:
                break
            await asyncio.sleep(FIXED_INTERVAL)
        batch.noticed[job_id] = time.time()
        paths = []
        for index, download in enumerate(project.get("downloads") or []):
            async with session.get(download["url"]) as reply:
                reply.raise_for_status()
                body = await reply.read()
            path = batch.directory / f"{job_id}-{index}.png"
            path.write_bytes(body)  # 64×64 PNGs: a write too small to be worth a thread
            paths.append(str(path))
        batch.delivered[job_id] = time.time()
        batch.files[job_id] = paths

    await asyncio.gather(*(one(i) for i in batch.ids))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(argv: list[str]) -> dict[str, Any]:
    client, url, api_key, jobs, directory = argv
    if client.startswith("pollkit"):
        # The durations pollkit learns stay in the benchmark's directory, shared by the runs
        # of one benchmark (a cold run first, then a warm one), never in the user's cache.
        os.environ["POLLKIT_CACHE_DIR"] = str(Path(directory).parent / "pollkit-cache")
    batch = Batch(url, api_key, Path(directory))
    waiters: dict[str, Callable[[], Awaitable[None]]]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await batch.anchor(session)
        if not client.startswith("pollkit-run"):
            await batch.submit(session, int(jobs))
        waiters = {
            "pollkit": lambda: wait_pollkit(batch, journal=False),
            "pollkit-journal": lambda: wait_pollkit(batch, journal=True),
            "pollkit-check": lambda: wait_pollkit_check(batch),
            "pollkit-run": lambda: run_pollkit(batch, int(jobs)),
            "pollkit-run-nojournal": lambda: run_pollkit(batch, int(jobs), journal=False),
            "sdk": lambda: wait_sdk(batch),
            "fixed": lambda: wait_fixed(batch, session),
        }
        cpu_before = _cpu()
        started = time.time()
        await waiters[client]()
        ended = time.time()
    return {
        "client": client,
        "ids": batch.ids,
        "wait_started": batch.sim(started),
        "wait_ended": batch.sim(ended),
        "cpu_before_wait": cpu_before,
        "cpu_at_end": _cpu(),
        "noticed": {k: batch.sim(v) for k, v in batch.noticed.items()},
        "delivered": {k: batch.sim(v) for k, v in batch.delivered.items()},
        "files": batch.files,
    }


if __name__ == "__main__":
    document = asyncio.run(main(sys.argv[1:-1]))
    Path(sys.argv[-1]).write_text(json.dumps(document))
