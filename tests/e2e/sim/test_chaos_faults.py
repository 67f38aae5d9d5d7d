"""The knobs the ``chaos`` scenario added: 429 bursts, resets of API requests, slow bodies,
unknown native statuses, and the ``faults`` counters of the stats."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pydantic
import pytest

from pollkit.sim import SCENARIOS, Scenario, Simulator
from tests.e2e.sim.helpers import IMAGE_BODY, MANUAL

KEY = "mhk_test_key"


@pytest.fixture
def scenario() -> Scenario:
    return MANUAL.replace(unknown_status_rate=1.0)


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends the key the way every dialect wants it."""
    headers = {"Authorization": f"Bearer {KEY}", "x-api-key": KEY}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session


async def _statuses(scenario: Scenario, count: int) -> tuple[list[tuple[int, str]], Any]:
    """(status, Retry-After) of `count` requests in a row to an API route, and the stats."""
    seen = []
    async with Simulator(scenario, api_key=KEY) as sim, aiohttp.ClientSession() as http:
        for _ in range(count):
            async with http.get(f"{sim.urls['pixyz']}/processes") as reply:
                seen.append((reply.status, reply.headers.get("Retry-After", "")))
        return seen, sim.stats()


async def test_rate_limits_come_in_bursts_of_consecutive_429s_drawn_from_the_seed() -> None:
    scenario = Scenario(seed=3, rate_limit_rate=0.1, rate_limit_burst=(3, 5), retry_after=0.5)
    first, stats = await _statuses(scenario, 200)
    again, _ = await _statuses(scenario, 200)
    assert first == again  # the same seed, the same faults on the same requests
    statuses = [status for status, _ in first]
    runs = [(start, len(run)) for start, (status, run) in _runs(statuses) if status == 429]
    # Whole runs only: the last one may be a burst cut short by the end of the requests.
    whole = [length for start, length in runs if start + length < len(statuses)]
    assert whole
    assert min(whole) >= 3
    assert {after for status, after in first if status == 429} == {"0.5"}
    faults = stats["requests"]["faults"]
    assert faults == {"429": statuses.count(429)}
    assert stats["requests"]["injected"] == statuses.count(429)


def _runs(values: list[int]) -> list[tuple[int, tuple[int, list[int]]]]:
    # (index where a run of equal values starts, (value, the run)).
    out = []
    start = 0
    for value, group in itertools.groupby(values):
        run = list(group)
        out.append((start, (value, run)))
        start += len(run)
    return out


async def test_an_api_reset_drops_the_request_before_the_handler_runs() -> None:
    async with Simulator(Scenario(api_reset_rate=1.0), api_key=KEY) as sim:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as reply:
                    await reply.read()
        stats = sim.stats()
    assert stats["jobs"] == []  # nothing was created: a resubmit pays nothing twice
    requests = stats["requests"]
    assert requests["faults"] == {"reset": requests["by_status"]["reset"]}
    assert requests["injected"] == requests["by_status"]["reset"] >= 1


async def test_a_slow_body_is_paced_and_counted_once_it_is_sent() -> None:
    scenario = Scenario(slow_rate=1.0, slow_bandwidth=64 * 1024)
    async with Simulator(scenario) as sim, aiohttp.ClientSession(base_url=sim.url) as http:
        path = "/_sim/blobs/slow.bin?size=32768"
        async with http.head(path) as reply:
            assert reply.status == 200
        started = time.monotonic()
        async with http.get(path) as reply:
            body = await reply.read()
        elapsed = time.monotonic() - started
        requests = sim.stats()["requests"]
    assert len(body) == 32768
    assert elapsed >= 0.35  # half a second at 64 KiB/s, less the first step's burst
    assert requests["faults"] == {"slow": 1}  # the HEAD sent no body
    assert requests["injected"] == 0  # slow is not failed


async def test_unknown_statuses_show_inside_their_window_then_the_job_goes_on(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    paths = {}
    async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as reply:
        paths[(await reply.json())["id"]] = "/v1/image-projects/{}"
    for collection, body in (
        ("imagine/imagination", {"engine": "photon_flash", "delineation": "a kite"}),
        ("videogen/videos", {"engine": "luma", "user_prompt": "a boat"}),
    ):
        async with http.post(f"/pixy/v1/apps/{collection}/", json=body) as reply:
            paths[(await reply.json())["uid"]] = f"/pixy/v1/apps/{collection}/{{}}"
    form = aiohttp.FormData({"process": "api_test", "params": "{}"}, default_to_multipart=True)
    async with http.post("/pixyz/jobs", data=form) as reply:
        paths[(await reply.json())["uuid"]] = "/pixyz/jobs/{}"

    async def status(job_id: str) -> str:
        async with http.get(paths[job_id].format(job_id)) as reply:
            item = await reply.json()
        return str(item.get("status") or item["task_status"])

    windows = {row["id"]: row["unknown_status_window"] for row in sim.stats()["jobs"]}
    # Every render lasts 100 s, so every window lasts 20 s and their middles come in order.
    for job_id, (start, end) in sorted(windows.items(), key=lambda item: item[1][0]):
        sim.clock.advance(max(0.0, (start + end) / 2 - sim.clock.now()))
        assert await status(job_id) in ("paused", "postprocessing", "PROGRESS")
    async with http.get("/pixyz/jobs") as reply:
        listed = {j["uuid"]: j["status"] for j in (await reply.json())["jobs"]}
    assert set(listed.values()) <= {"RUNNING", "STARTED", "PROGRESS"}
    sim.clock.advance(max(end for _, end in windows.values()) + 1 - sim.clock.now())
    assert {await status(job_id) for job_id in paths} == {"rendering", "processing", "RUNNING"}
    sim.clock.advance(100)
    assert {await status(job_id) for job_id in paths} == {"complete", "completed", "SUCCESS"}
    faults = sim.stats()["requests"]["faults"]
    assert faults == {"unknown_status": 4}  # each job counted once, however often it showed


async def test_expired_urls_and_archives_not_ready_are_counted_but_not_injected(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0, count=2)
    async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as reply:
        job_id = (await reply.json())["id"]
    async with http.get(f"/v1/image-projects/{job_id}") as reply:
        url = (await reply.json())["downloads"][0]["url"]
    form = aiohttp.FormData({"process": "api_test", "params": "{}"}, default_to_multipart=True)
    async with http.post("/pixyz/jobs", data=form) as reply:
        job_uuid = (await reply.json())["uuid"]
    for _ in range(2):  # TaskProcessingStarted, then "already running"
        async with http.get(f"/pixyz/jobs/{job_uuid}/outputs/archive") as reply:
            assert reply.status == 425
    sim.clock.advance(sim.scenario.url_ttl + 2)
    async with http.get(url) as reply:
        assert reply.status == 403
    requests = sim.stats()["requests"]
    assert requests["faults"] == {"url_expired": 1, "archive_not_ready": 2}
    assert requests["injected"] == 0


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rate_limit_burst": 0}, "rate_limit_burst"),
        ({"rate_limit_burst": (4, 2)}, "rate_limit_burst"),
        ({"api_reset_rate": 1.5}, "api_reset_rate"),
        ({"slow_rate": -0.1}, "slow_rate"),
        ({"slow_bandwidth": 0}, "slow_bandwidth"),
        ({"unknown_status_rate": 2}, "unknown_status_rate"),
        ({"http_error_rate": 0.5, "api_reset_rate": 0.6}, "api_reset_rate must not exceed 1"),
    ],
)
def test_invalid_chaos_knobs_are_rejected(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        Scenario(**changes)


def test_the_chaos_scenario() -> None:
    chaos = SCENARIOS["chaos"]
    assert (chaos.http_error_rate, chaos.api_reset_rate) == (0.05, 0.02)
    assert chaos.rate_limit_burst[0] >= 2  # bursts, not single 429s
    assert (chaos.truncate_rate, chaos.failure_rate, chaos.cancel_rate) == (0.03, 0.05, 0.02)
    assert chaos.url_ttl == 30
    assert chaos.unknown_status_rate > 0
    assert chaos.stall_rate > 0
    assert chaos.slow_rate > 0
    assert Scenario(rate_limit_burst=4).rate_limit_burst == (4, 4)
