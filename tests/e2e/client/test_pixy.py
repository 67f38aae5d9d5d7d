"""Pixy end to end: `AsyncClient`/`PixyClient`/`Client` + `Pixy` + the simulator over sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import (
    AuthenticationError,
    Cadence,
    Client,
    ConfigurationError,
    InvalidRequest,
    NotFound,
    ServerError,
    Status,
    UnsupportedOperation,
)
from pollkit.client._pixy import PixyClient
from pollkit.models import Event
from pollkit.providers.pixy import ImageGenProperties, Pixy
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import (
    FAST_CADENCE,
    FAST_RETRY,
    FROZEN,
    RecordingSink,
    assert_valid_png,
    job_stats,
    sha256_file,
)

IMAGE = {"type": "image", "engine": "photon_flash", "delineation": "a red kite"}
ITEM_ROUTE = "GET /pixy/v1/apps/imagine/imagination/{uid}"
LIST_ROUTE = "GET /pixy/v1/apps/imagine/imagination/"


@pytest.fixture
def scenario() -> Scenario:
    return FROZEN


@pytest.fixture
async def sim(scenario: Scenario) -> AsyncIterator[Simulator]:
    async with Simulator(scenario) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[PixyClient]:
    provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
    async with PixyClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as c:
        yield c


async def test_check_result_polls_through_the_phases_and_saves_the_images(
    sim: Simulator, client: PixyClient, tmp_path: Path
) -> None:
    spec = ImageGenProperties(engine="midjourney", delineation="a fox", aspect_ratio="4:5")
    submission = await client.submit(spec.as_spec())
    assert submission.kind == "image"
    sink = RecordingSink(on_status=lambda _: sim.clock.advance(7))
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, kind="image", progress=sink
    )
    assert result.ok
    assert sink.statuses[0] is Status.QUEUED
    assert Status.RENDERING in sink.statuses
    assert sink.statuses[-1] is Status.COMPLETE
    served = job_stats(sim.stats(), submission.job_id)
    assert [sha256_file(p) for p in result.downloaded_paths] == [
        o["sha256"] for o in served["outputs"]
    ]
    assert len(result.downloaded_paths) == 4
    for path, entry in zip(result.downloaded_paths, result.state.raw["results"], strict=True):
        assert assert_valid_png(path.read_bytes()) == (entry["width"], entry["height"])
    assert result.state.raw["task_report"] == "midjourney completed."


async def test_a_refused_key_fails_at_the_key_check_before_any_other_request(
    sim: Simulator, tmp_path: Path
) -> None:
    provider = Pixy(api_key="pk_wrong_key", base_url=sim.urls["pixy"])
    with pytest.raises(AuthenticationError, match="verify API key: HTTP 401") as info:
        async with PixyClient(provider, retry=FAST_RETRY):
            pass
    assert "pk_wrong_key" not in str(info.value)
    assert sim.stats()["requests"]["by_route"] == {"POST /pixy/api_key/verify": 1}


async def test_a_server_down_at_the_key_check_is_not_a_refused_key(sim: Simulator) -> None:
    sim.inject(status=503, count=2, path_prefix="/pixy/api_key/verify")
    provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
    client = PixyClient(provider, retry=FAST_RETRY.model_copy(update={"max_attempts": 2}))
    try:
        with pytest.raises(ServerError, match="HTTP 503"):
            await client.start()  # both attempts answered 503
        job = await client.submit(IMAGE)  # checks the key again: the server is back
    finally:
        await client.aclose()
    assert job.kind == "image"


async def test_invalid_properties_send_nothing(sim: Simulator, client: PixyClient) -> None:
    before = sim.stats()["requests"]["total"]
    with pytest.raises(ConfigurationError, match="aspect_ratio"):
        await client.submit({**IMAGE, "engine": "dalle", "aspect_ratio": "16:9"})
    with pytest.raises(ConfigurationError, match="image_url"):
        await client.submit({"type": "video", "engine": "kling", "user_prompt": "x"})
    assert sim.stats()["requests"]["total"] == before


async def test_invalid_properties_are_refused_before_even_the_key_check(sim: Simulator) -> None:
    provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
    client = PixyClient(provider, retry=FAST_RETRY)
    try:
        with pytest.raises(ConfigurationError, match="delineation"):
            await client.submit({"type": "image", "engine": "dalle"})
    finally:
        await client.aclose()
    assert sim.stats()["requests"]["total"] == 0


async def test_unknown_ids_are_not_found_in_every_collection(
    sim: Simulator, client: PixyClient
) -> None:
    with pytest.raises(NotFound, match="Subtitle not found"):
        await client.get("0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10")
    with pytest.raises(NotFound, match="Imagination not found"):
        await client.check_result("0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10", kind="image")


async def test_update_is_unsupported_where_patch_answers_405(client: PixyClient) -> None:
    job = await client.submit(IMAGE)
    with pytest.raises(UnsupportedOperation, match="not supported by this server"):
        await client.update(job.job_id, {"meta_data": {"a": 1}}, kind="image")


@pytest.mark.parametrize("scenario", [FROZEN.replace(pixy_update="enabled")])
async def test_update_changes_the_item_where_patch_is_enabled(client: PixyClient) -> None:
    job = await client.submit({"type": "video", "engine": "luma", "user_prompt": "a boat"})
    updated = await client.update(job.job_id, {"meta_data": {"batch": "b1"}})  # type unknown
    assert updated.raw["meta_data"] == {"batch": "b1"}
    assert updated.kind == "video"
    assert (await client.get(job.job_id, kind="video")).raw["meta_data"] == {"batch": "b1"}


async def test_soft_delete_then_reads_are_not_found(sim: Simulator, client: PixyClient) -> None:
    job = await client.submit(IMAGE)
    deleted = await client.delete(job.job_id, kind="image")
    assert deleted.raw["is_deleted"] is True
    assert deleted.status is Status.CANCELED
    assert deleted.error is not None
    assert deleted.error.code == "deleted"
    with pytest.raises(NotFound):
        await client.get(job.job_id, kind="image")
    other = await client.submit(IMAGE)
    await client.delete(other.job_id, kind="image")  # the generic delete works too
    with pytest.raises(NotFound):
        await client.delete(other.job_id, kind="image")


async def test_list_all_pages_past_100_items_newest_first(
    sim: Simulator, client: PixyClient
) -> None:
    made = [(await client.submit({**IMAGE, "delineation": f"p{i}"})).job_id for i in range(130)]
    listed = [state.job_id async for state in client.list_all("image")]
    assert listed == made[::-1]
    assert sim.stats()["requests"]["by_route"][LIST_ROUTE] == 2
    page = await client.list_page("image", offset=120, limit=50)
    assert (page.total, len(page.items), page.next_offset) == (130, 10, None)
    with pytest.raises(ConfigurationError, match="page_size"):
        [s async for s in client.list_all("image", page_size=101)]


async def test_list_422_is_raised_with_the_server_details(client: PixyClient) -> None:
    with pytest.raises(InvalidRequest, match="less than or equal to 100") as info:
        await client.list_page("image", limit=101)
    assert info.value.status_code == 422
    assert info.value.details[0]["loc"] == ["query", "limit"]


QUICK = Scenario(time_scale=1000.0, queue_delay=(5.0, 15.0), render_time=(40.0, 80.0))


@pytest.mark.parametrize("scenario", [QUICK])
async def test_a_batch_polls_through_the_list_with_rising_progress_and_logs(
    sim: Simulator, client: PixyClient, tmp_path: Path
) -> None:
    events: list[Event] = []
    specs = [{**IMAGE, "delineation": f"p{i}"} for i in range(30)]
    cadence = Cadence(initial=0.01, maximum=0.02, jitter=0.1, timeout=20)
    results = [
        r
        async for r in client.run(
            specs,
            download_directory=tmp_path,
            journal=False,
            cadence=cadence,
            on_event=events.append,
        )
    ]
    assert [r.status for r in results] == [Status.COMPLETE] * 30
    assert all(len(r.downloaded_paths) == 1 for r in results)
    observations = sum(r.polls for r in results)
    routes = sim.stats()["requests"]["by_route"]
    status_requests = routes.get(LIST_ROUTE, 0) + routes.get(ITEM_ROUTE, 0)
    assert observations >= 60
    assert status_requests < observations / 3
    by_job: dict[str, list[float]] = {}
    for event in events:
        if event.state is not None and event.state.progress is not None and event.job_id:
            by_job.setdefault(event.job_id, []).append(event.state.progress)
    assert any(len(p) >= 3 for p in by_job.values())
    assert all(p == sorted(p) for p in by_job.values())
    final_logs = [e.state.raw["task_logs"] for e in events if e.kind == "done" and e.state]
    assert all(logs[-1]["message"] == "photon_flash completed." for logs in final_logs)


@pytest.mark.parametrize("scenario", [QUICK])
async def test_a_job_deleted_during_a_batch_is_polled_on_its_own_and_reported(
    sim: Simulator, client: PixyClient, tmp_path: Path
) -> None:
    specs = [("victim", {**IMAGE, "delineation": "victim"})] + [
        (f"k{i}", {**IMAGE, "delineation": f"p{i}"}) for i in range(20)
    ]
    deletions: list[asyncio.Task[Any]] = []

    def on_event(event: Event) -> None:
        if event.kind == "submitted" and event.key == "victim" and event.job_id:
            deletions.append(asyncio.ensure_future(client.delete(event.job_id, kind="image")))

    # A fixed interval: other jobs keep falling due together with the missing one.
    cadence = Cadence(initial=0.02, maximum=0.02, jitter=0.2, timeout=20)
    results = {
        r.key: r
        async for r in client.run(
            specs, download_directory=tmp_path, journal=False, cadence=cadence, on_event=on_event
        )
    }
    await asyncio.gather(*deletions)
    victim = results["victim"]
    assert isinstance(victim.error, NotFound)
    assert all(results[f"k{i}"].ok for i in range(20))
    # Missing from the list, the victim is asked about on its own: pushed back with the due
    # jobs it would be listed again and again, re-polling them early each time (about 20 list
    # requests and three times the polls here, instead of about 5).
    assert sim.stats()["requests"]["by_route"][LIST_ROUTE] <= 12


def test_the_blocking_client_checks_a_subtitle_job(tmp_path: Path) -> None:
    with ThreadedSimulator(QUICK) as sim:
        provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
        with Client(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
            spec = {"type": "subtitle", "url": "https://m.test/a.mp4", "target_language": "German"}
            job = client.submit(spec)
            result = client.check_result(job.job_id, download_directory=tmp_path, kind=job.kind)
    assert result.ok
    (path,) = result.downloaded_paths
    assert path.suffix == ".srt"
    assert b"[German]" in path.read_bytes()
