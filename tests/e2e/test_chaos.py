"""A thousand jobs of every provider through the simulator's ``chaos`` scenario, end to end.

The scenario fails API requests (5xx, resets, bursts of 429), breaks download bodies
(truncated, reset, stalled, slow), lets URLs expire, fails and cancels jobs, shows unknown
native statuses and makes PiXYZ archives answer 425 a while. Whatever happened, every
completed job's outputs must be on disk byte for byte as the simulator made them, every failed
or canceled job reported as such, no spec submitted twice and no ``.part`` file left behind.
How the batch is driven and checked is in ``tests/e2e/chaos.py`` (shared with the benchmark).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pollkit import AsyncClient, Cadence, DownloadPolicy, MagicHour, RetryPolicy
from pollkit.client._pixyz import PixyzClient
from pollkit.download._downloader import Downloader
from pollkit.models import Output
from pollkit.providers.pixyz import Pixyz
from pollkit.sim import SCENARIOS, Scenario, Simulator
from pollkit.transport._http import Transport
from tests.e2e.chaos import FAULT_KINDS, build_lanes, run_all, table, verify
from tests.helpers import FAST_CADENCE, FAST_RETRY, IMAGE_SPEC, job_stats, sha256_file

JOBS = 1000
NOT_READY = Cadence(initial=0.01, maximum=0.02, jitter=0.0, timeout=10)


# Typically 20–30 s on two shared cores; the ceiling leaves room for a busy machine.
@pytest.mark.timeout(180)
async def test_a_thousand_jobs_through_chaos_end_verified(tmp_path: Path) -> None:
    async with Simulator(SCENARIOS["chaos"]) as sim:
        lanes = build_lanes(sim.urls, sim.api_key, JOBS, tmp_path)
        wall = await run_all(lanes)
        report = verify(lanes, sim.stats())
    print(f"\n{table(report, wall)}")  # shown with -s: the figures of this run
    assert report.problems == []
    assert report.results == report.specs == JOBS
    assert report.duplicates == 0
    assert report.part_files == []
    # Every kind of trouble really happened, and every outcome is represented.
    assert {kind: report.faults.get(kind, 0) > 0 for kind in FAULT_KINDS} == dict.fromkeys(
        FAULT_KINDS, True
    )
    assert set(report.outcomes) == {"complete", "error", "canceled"}
    assert report.files_verified > report.outcomes["complete"]
    # A single run gives up only on ambiguous submits: transient failures of polls and
    # downloads are all absorbed within it.
    assert set(report.first_pass_errors) <= {"ambiguous submit"}
    # And only those the server may have acted on: never a 503, a 429 or an unsent request.
    causes = {why for lane in report.first_pass_by_lane.values() for why in lane}
    assert causes <= {"HTTP 500", "HTTP 502", "HTTP 504", "reset after sending"}
    # PiXYZ finds the job of an ambiguous submit by its name, or learns it was never created.
    assert sum(report.first_pass_by_lane["pixyz-files"].values()) == 0
    assert sum(report.first_pass_by_lane["pixyz-archive"].values()) == 0


# -- regressions the chaos run found ----------------------------------------------------------


async def test_run_reports_the_files_extracted_from_an_archive(tmp_path: Path) -> None:
    quick = Scenario(time_scale=1000.0, queue_delay=5.0, render_time=10.0, archive_delay=30.0)
    model = tmp_path / "bracket.step"
    model.write_bytes(b"ISO-10303-21;" * 100)
    spec = {"process": "generate_thumbnails", "file": str(model), "params": {"width": 9}}
    extract = DownloadPolicy(extract_archives=True, not_ready=NOT_READY)
    async with Simulator(quick) as sim:
        provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"], outputs="archive")
        async with PixyzClient(
            provider, cadence=FAST_CADENCE, retry=FAST_RETRY, download=extract
        ) as client:
            (result,) = [
                r async for r in client.run([spec], download_directory=tmp_path, journal=False)
            ]
        served = {o["name"]: o["sha256"] for o in job_stats(sim.stats(), result.job_id)["outputs"]}
    assert result.ok
    assert len(served) == 6
    assert {p.name: sha256_file(p) for p in result.extracted_paths} == served


async def test_a_refreshed_url_is_used_before_it_can_expire_again(tmp_path: Path) -> None:
    # URLs live 30 simulated seconds, 0.3 s of real time here, and every retry first waits
    # 0.5 s: a URL refreshed as soon as the old one was refused would expire during the wait,
    # on every attempt. Refreshed right before the next request, it is fresh when used.
    short = Scenario(time_scale=100.0, queue_delay=0.0, render_time=0.0, url_ttl=30.0)
    retry = RetryPolicy(initial=0.5, maximum=0.5, jitter=0.0, max_attempts=3)
    refreshed: list[str | None] = []
    async with Simulator(short) as sim:
        provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        async with AsyncClient(provider, retry=retry) as client:
            job = await client.submit(IMAGE_SPEC)
            state = await client.wait(job.job_id, kind=job.kind)
            sim.clock.advance(60)  # the URLs `state` lists have expired

            async def refresh(stale: Output) -> Output:
                fresh = await client.get(job.job_id, kind=job.kind)
                refreshed.append(fresh.outputs[stale.index].url)
                return fresh.outputs[stale.index]

            transport = Transport(retry=retry)
            try:
                saved = await Downloader(transport, retry=retry).fetch(
                    state.outputs[0], tmp_path, job_id=job.job_id, refresh=refresh
                )
            finally:
                await transport.aclose()
        served = job_stats(sim.stats(), job.job_id)["outputs"][0]["sha256"]
    assert len(refreshed) == 1
    assert sha256_file(saved.path) == served
    assert sim.stats()["requests"]["faults"]["url_expired"] == 1
