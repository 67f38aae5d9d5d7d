"""Fault injection (planned and random) and the request counters in the stats."""

from __future__ import annotations

import aiohttp
import pytest

from pollkit.sim import SCENARIOS, Simulator
from tests.e2e.sim.helpers import IMAGE_BODY, create, get_project


async def test_injected_status_with_retry_after(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.inject(status=429, count=2, path_prefix="/v1/", retry_after=2.5)
    for _ in range(2):
        async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as response:
            assert response.status == 429
            assert response.headers["Retry-After"] == "2.5"
            assert response.content_type == "application/json"
            assert await response.json() == {"message": "Too Many Requests"}
    await create(http, "/v1/ai-image-generator", IMAGE_BODY)  # the third one goes through
    requests = sim.stats()["requests"]
    assert requests["injected"] == 2
    assert requests["by_status"] == {"429": 2, "200": 1}
    assert requests["by_route"] == {"POST /v1/ai-image-generator": 3}
    assert len(sim.stats()["jobs"]) == 1


async def test_injection_matches_method_and_prefix(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    sim.inject(status=503, count=1, path_prefix="/v1/image-projects/", method="GET")
    await create(http, "/v1/ai-image-generator", IMAGE_BODY)  # POST: not matched
    async with http.get(f"/v1/image-projects/{job_id}") as response:
        assert response.status == 503
        assert "Retry-After" not in response.headers
    assert (await get_project(http, "image", job_id))["id"] == job_id


async def test_injected_reset_is_a_transport_error(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    # Two resets: aiohttp silently retries an idempotent request once when the connection
    # closes without an answer, which would hide a single reset.
    sim.inject(kind="reset", count=2, path_prefix="/v1/image-projects/")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"/v1/image-projects/{job_id}") as response:
            await response.read()
    assert (await get_project(http, "image", job_id))["id"] == job_id
    requests = sim.stats()["requests"]
    assert requests["injected"] == 2
    assert requests["by_status"]["reset"] == 2


async def test_faults_on_file_downloads(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    url = (await get_project(http, "image", job_id))["downloads"][0]["url"]
    sim.inject(status=502, count=1, path_prefix="/_sim/files/")
    async with http.get(url) as response:
        assert response.status == 502
    async with http.get(url) as response:
        assert response.status == 200


async def test_control_routes_are_never_faulted_or_counted(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.inject(status=500, count=5, path_prefix="/")
    async with http.get("/_sim/stats") as response:
        assert response.status == 200
        stats = await response.json()
    assert stats["requests"]["total"] == 0
    async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as response:
        assert response.status == 500


async def test_inject_and_plan_over_http(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {"status": 504, "count": 1, "path_prefix": "/v1/ai-image", "retry_after": 1}
    async with http.post("/_sim/inject", json=body) as response:
        assert response.status == 200
    async with http.post("/_sim/plan", json={"outcome": "draft", "count": 1}) as response:
        assert response.status == 200
    async with http.post("/v1/ai-image-generator", json=IMAGE_BODY) as response:
        assert response.status == 504
        assert response.headers["Retry-After"] == "1"
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    sim.clock.advance(10_000)
    assert (await get_project(http, "image", job_id))["status"] == "draft"
    for path, bad in (
        ("/_sim/inject", {"kind": "explode"}),
        ("/_sim/inject", {"status": 42}),
        ("/_sim/plan", {"outcome": "exploded"}),
        ("/_sim/plan", {"count": 0}),
        ("/_sim/plan", {"colour": "blue"}),
    ):
        async with http.post(path, json=bad) as response:
            assert response.status == 400, (path, bad)
            assert "message" in await response.json()


async def test_random_faults_are_seeded_and_counted() -> None:
    async def run() -> list[int]:
        statuses = []
        async with Simulator(SCENARIOS["flaky"].replace(seed=11)) as sim:
            headers = {"Authorization": f"Bearer {sim.api_key}"}
            async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
                for _ in range(200):
                    async with http.get("/v1/image-projects/cnothing") as response:
                        statuses.append(response.status)
                        if response.status == 429:
                            assert response.headers["Retry-After"] == "0.05"
                async with http.get("/_sim/stats") as response:
                    stats = await response.json()
        faults = [status for status in statuses if status != 404]
        assert stats["requests"]["injected"] == len(faults)
        assert stats["requests"]["total"] == 200
        return statuses

    first = await run()
    assert first == await run()
    assert {status for status in first if status != 404} <= {429, 500, 502, 503, 504}
    assert 4 <= sum(status >= 500 for status in first) <= 20
    assert 1 <= first.count(429) <= 14


def test_invalid_injection_is_rejected() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="kind"):
        sim.inject(kind="explode")
    with pytest.raises(ValueError, match="count"):
        sim.inject(count=0)
    with pytest.raises(ValueError, match="outcome"):
        sim.plan_next(outcome="exploded")
