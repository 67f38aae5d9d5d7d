"""Push in batches: `AsyncClient.run` with a status stream or webhooks, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pollkit import AsyncClient, Cadence, MagicHour, Status, StatusStream, WebhookReceiver
from pollkit.sim import Scenario, Simulator
from tests.e2e.push.test_push import register_magichour_webhook
from tests.helpers import FAST_RETRY, job_stats, sha256_file

SCENARIO = Scenario(time_scale=50.0, seed=12, image_size=(16, 16))
CADENCE = Cadence(initial=0.005, maximum=0.02, timeout=20)
SPECS = [
    (f"job-{i}", {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": f"p{i}"}})
    for i in range(40)
]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SCENARIO) as simulator:
        yield simulator


def client_for(sim: Simulator, push: StatusStream | WebhookReceiver) -> AsyncClient:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    return AsyncClient(provider, cadence=CADENCE, retry=FAST_RETRY, push=push)


async def test_a_batch_on_a_status_stream_polls_nothing(sim: Simulator, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    stream = StatusStream(sim.event_stream_url("magichour"), headers=headers)
    async with client_for(sim, stream) as client:
        results = [r async for r in client.run(SPECS, download_directory=tmp_path)]
    assert sorted(r.key or "" for r in results) == sorted(key for key, _ in SPECS)
    assert {r.status for r in results} == {Status.COMPLETE}
    stats = sim.stats()
    for result in results:
        served = job_stats(stats, result.job_id)
        # The stream told every change: not one status request, with this fast a cadence.
        assert served["status_requests"] == 0
        assert result.polls == 0
        assert [sha256_file(p) for p in result.downloaded_paths] == [
            o["sha256"] for o in served["outputs"]
        ]


async def test_a_batch_on_verified_webhooks_reads_each_job_once(
    sim: Simulator, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    async with client_for(sim, receiver) as client:
        await register_magichour_webhook(sim, receiver.url)
        results = [r async for r in client.run(SPECS, download_directory=tmp_path, journal=False)]
    assert {r.status for r in results} == {Status.COMPLETE}
    stats = sim.stats()
    # The `completed` webhook is only a hint: one read of the job confirms it, nothing more.
    assert [job_stats(stats, r.job_id)["status_requests"] for r in results] == [1] * len(SPECS)


async def test_a_dropped_stream_hands_the_batch_back_to_its_cadence(
    sim: Simulator, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    # A stream that cannot connect (wrong key) is never live: the batch polls as usual.
    stream = StatusStream(
        sim.event_stream_url("magichour"),
        headers={**headers, "Authorization": "Bearer wrong"},
        reconnect_delay=0.05,
        max_reconnect_delay=0.1,
    )
    async with client_for(sim, stream) as client:
        results = [r async for r in client.run(SPECS[:10], download_directory=tmp_path)]
    assert {r.status for r in results} == {Status.COMPLETE}
    assert all(r.polls >= 1 for r in results)
