"""Server push with automatic fallback, end to end: the simulator's status streams and webhooks
(Pixy's and Magic Hour's), `StatusStream`, `WebhookReceiver` and the engine's fallback to
polling when a stream drops or stays silent."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pollkit import (
    AsyncClient,
    Cadence,
    Client,
    ConfigurationError,
    MagicHour,
    Pixy,
    Pixyz,
    PollTimeout,
    Status,
    StatusStream,
    WebhookReceiver,
)
from pollkit.providers.base import Notification
from pollkit.push._hub import Notifications
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from pollkit.transport._http import Transport
from tests.helpers import FAST_RETRY, job_stats, sha256_file

# Jobs take 0.1–0.5 real seconds; without push this cadence would poll them dozens of times.
SCENARIO = Scenario(time_scale=50.0, seed=11, image_size=(16, 16), video_bytes=4096)
CADENCE = Cadence(initial=0.005, maximum=0.02, timeout=20)
IMAGE = {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a kite"}}
QUICK_RECONNECT = {"reconnect_delay": 0.02, "max_reconnect_delay": 0.05}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SCENARIO) as simulator:
        yield simulator


def stream_of(sim: Simulator, dialect: str) -> StatusStream:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    return StatusStream(sim.event_stream_url(dialect), headers=headers, **QUICK_RECONNECT)


def magichour(sim: Simulator, **kwargs: Any) -> AsyncClient:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    return AsyncClient(provider, **{"cadence": CADENCE, "retry": FAST_RETRY, **kwargs})


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for an observable condition (a short poll loop with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def status_requests(sim: Simulator, job_id: str) -> int:
    count: int = job_stats(sim.stats(), job_id)["status_requests"]
    return count


# -- the status stream --------------------------------------------------------------------------


async def test_stream_ends_every_wait_at_one_request_with_the_files_byte_exact(
    sim: Simulator, tmp_path: Path
) -> None:
    stream = stream_of(sim, "magichour")
    async with magichour(sim, push=stream) as client:
        jobs = [await client.submit({**IMAGE, "name": f"p{i}"}) for i in range(6)]
        results = await asyncio.gather(
            *(client.check_result(j.job_id, download_directory=tmp_path, kind=j.kind) for j in jobs)
        )
    assert [r.status for r in results] == [Status.COMPLETE] * 6
    assert [r.polls for r in results] == [0] * 6
    stats = sim.stats()
    for job, result in zip(jobs, results, strict=True):
        served = job_stats(stats, job.job_id)
        # Submitted while the stream was live: it told everything, no poll was needed.
        assert served["status_requests"] == 0
        assert [sha256_file(p) for p in result.downloaded_paths] == [
            o["sha256"] for o in served["outputs"]
        ]
    assert stats["push"]["events"] >= 6 * 2
    assert stream.connections == 1


@pytest.mark.parametrize("outputs", ["files", "archive"])
async def test_stream_of_pixyz_jobs_then_their_outputs(
    sim: Simulator, tmp_path: Path, outputs: str
) -> None:
    model = tmp_path / "part.step"
    model.write_bytes(b"ISO-10303-21;" * 100)
    provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"], outputs=outputs)
    spec = {"process": "generate_thumbnails", "file": str(model), "params": {"width": 4}}
    async with AsyncClient(
        provider, cadence=CADENCE, retry=FAST_RETRY, push=stream_of(sim, "pixyz")
    ) as client:
        job = await client.submit(spec)
        result = await client.check_result(job.job_id, download_directory=tmp_path / "out")
    assert result.ok
    assert result.polls == 0
    assert status_requests(sim, job.job_id) == 0
    assert result.downloaded_paths


async def test_a_wait_on_a_job_submitted_elsewhere_polls_first(sim: Simulator) -> None:
    async with magichour(sim) as other:
        job = await other.submit(IMAGE)  # not this client's: its early events were not kept
    async with magichour(sim, push=stream_of(sim, "magichour")) as client:
        final = await client.wait(job.job_id, kind=job.kind)
    assert final.status is Status.COMPLETE
    assert status_requests(sim, job.job_id) == 1  # the first poll, then the stream


async def test_a_dropped_stream_hands_the_job_to_polling_and_reconnects_with_the_last_id(
    sim: Simulator, tmp_path: Path
) -> None:
    stream = stream_of(sim, "magichour")
    async with magichour(sim, push=stream) as client:
        sim.plan_next("complete", queue_delay=0.0, render_time=10.0)  # 0.2 real seconds
        job = await client.submit(IMAGE)
        seen: list[Status] = []

        def on_state(state: Any) -> None:
            seen.append(state.status)
            if len(seen) == 1:
                sim.drop_event_streams(refuse=True)  # push goes away after the first poll

        final = await client.wait(job.job_id, kind=job.kind, on_state=on_state)
        polled = status_requests(sim, job.job_id)
        sim.accept_event_streams()
        await until(lambda: stream.connections == 2 and stream.notifications.live)
    assert final.status is Status.COMPLETE
    assert polled > 2  # the drop woke the wait, which then polled on its cadence
    assert seen[-1] is Status.COMPLETE


async def test_events_missed_while_disconnected_are_replayed_after_the_last_id(
    sim: Simulator,
) -> None:
    stream = stream_of(sim, "magichour")
    transport = Transport(retry=FAST_RETRY)
    try:
        await stream.start(transport)
        assert stream.notifications.live
        sim.drop_event_streams(refuse=True)
        await until(lambda: not stream.notifications.live)
        sim.plan_next("complete", queue_delay=0.0, render_time=1.0)
        async with magichour(sim) as client:
            job = await client.submit(IMAGE)
        with stream.notifications.subscribe(job.job_id) as subscription:
            await until(lambda: job_stats(sim.stats(), job.job_id)["status"] == "complete")
            sim.accept_event_streams()  # the job ended while no stream was open
            bodies = []
            while not bodies or bodies[-1]["status"] != "complete":
                notification = await subscription.next(timeout=10)
                assert notification is not None
                bodies.append(notification.body)
    finally:
        await stream.aclose()
        await transport.aclose()
    # The first replayed event (the job started rendering) shows the job as it is when sent.
    assert [b["status"] for b in bodies] == ["complete"]
    assert len(bodies[-1]["downloads"]) == 2


async def test_a_stream_that_cannot_connect_leaves_waits_polling(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.drop_event_streams(refuse=True)
    stream = stream_of(sim, "magichour")
    async with magichour(sim, push=stream, timeout=1.0) as client:
        job = await client.submit(IMAGE)
        final = await client.wait(job.job_id, kind=job.kind)
    assert final.status is Status.COMPLETE
    assert status_requests(sim, job.job_id) > 1
    assert stream.connections == 0
    assert "not connected yet: polling" in caplog.text


async def test_the_deadline_holds_while_push_is_live(sim: Simulator) -> None:
    sim.plan_next(outcome="draft")  # never starts, so no notification ever comes
    async with magichour(sim, push=stream_of(sim, "magichour")) as client:
        job = await client.submit(IMAGE)
        started = asyncio.get_running_loop().time()
        with pytest.raises(PollTimeout):
            await client.wait(job.job_id, kind=job.kind, timeout=0.3)
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 5  # the push window (60 s) never stretches a wait past its deadline
    # No first poll (submitted while live), and the one at the deadline.
    assert status_requests(sim, job.job_id) == 1


async def test_the_stream_needs_the_key(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        url = sim.event_stream_url("pixy")
        async with session.get(url, headers={"Authorization": "Bearer wrong"}) as reply:
            assert reply.status == 401
        async with session.get(sim.url + "/_sim/events/flux0") as reply:
            assert reply.status == 404
    with pytest.raises(ConfigurationError, match="http"):
        StatusStream("ftp://example.com/events")
    with pytest.raises(ConfigurationError, match="reconnect"):
        StatusStream(url, reconnect_delay=0)


# -- webhooks -----------------------------------------------------------------------------------


async def test_pixy_webhooks_end_the_wait_at_one_request(sim: Simulator, tmp_path: Path) -> None:
    provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
    receiver = WebhookReceiver(provider)
    async with AsyncClient(provider, cadence=CADENCE, retry=FAST_RETRY, push=receiver) as client:
        spec = {
            "type": "video",
            "engine": "kling",
            "user_prompt": "waves",
            "image_url": "https://example.com/a.png",
        }
        job = await client.submit({**spec, "webhook_url": receiver.url})
        result = await client.check_result(job.job_id, download_directory=tmp_path, kind="video")
    assert result.ok
    assert result.polls == 1
    assert status_requests(sim, job.job_id) == 1
    assert receiver.received >= 2  # Pixy posts the item on every save
    served = job_stats(sim.stats(), job.job_id)
    assert [sha256_file(p) for p in result.downloaded_paths] == [
        o["sha256"] for o in served["outputs"]
    ]


async def register_magichour_webhook(sim: Simulator, url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/webhooks/magichour", json={"url": url}) as reply,
    ):
        assert reply.status == 204


async def test_magic_hour_account_webhooks_end_the_wait_at_one_request(
    sim: Simulator, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    async with magichour(sim, push=receiver) as client:
        await register_magichour_webhook(sim, receiver.url)
        sim.plan_next(outcome="error")
        failed = await client.submit(IMAGE)
        job = await client.submit(IMAGE)
        results = await asyncio.gather(
            client.check_result(failed.job_id, kind="image"),
            client.check_result(job.job_id, download_directory=tmp_path, kind="image"),
        )
    assert [r.status for r in results] == [Status.ERROR, Status.COMPLETE]
    assert [r.polls for r in results] == [1, 1]
    assert sim.stats()["push"]["webhooks"] >= 4  # started and completed/errored, each
    assert len(results[1].downloaded_paths) == 2


async def test_a_cancellation_without_webhook_is_found_by_the_window_poll(sim: Simulator) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    window = CADENCE.model_copy(update={"push_window": 0.2})
    async with magichour(sim, push=receiver, cadence=window) as client:
        await register_magichour_webhook(sim, receiver.url)
        sim.plan_next(
            "complete", queue_delay=1000.0
        )  # stays queued: no webhook at all before the cancel
        job = await client.submit(IMAGE)
        cancel = lambda state: sim.cancel(job.job_id)  # noqa: E731 (after the first poll)
        final = await client.wait(job.job_id, kind=job.kind, on_state=cancel)
    assert final.status is Status.CANCELED
    assert status_requests(sim, job.job_id) == 2  # Magic Hour sends nothing for canceled


async def test_receiver_refuses_what_it_cannot_read_and_mounts_in_an_app(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
    receiver = WebhookReceiver(provider, serve=False, path="/hooks/pixy", trust_payload=True)
    app = web.Application()
    app.router.add_post(receiver.route, receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/pixy"
    url = f"{base}/{receiver.secret}"
    uid = "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10"
    json_type = {"Content-Type": "application/json"}
    try:
        await receiver.start()
        with receiver.notifications.subscribe(uid) as subscription:
            async with aiohttp.ClientSession() as session:
                cases = [b"{not json", b"[1, 2]", json.dumps({"uid": uid, "task_type": "Odd"})]
                statuses = []
                for body in cases:
                    async with session.post(url, data=body, headers=json_type) as reply:
                        statuses.append(reply.status)
                item = {"uid": uid, "task_type": "Video", "task_status": "completed"}
                # The secret check holds in the user's app too: a wrong secret is 404.
                async with session.post(f"{base}/{'x' * 43}", json=item) as reply:
                    statuses.append(reply.status)
                async with session.post(url, json=item) as reply:
                    statuses.append(reply.status)
            notification = await subscription.next(timeout=5)
    finally:
        await receiver.aclose()
        await runner.cleanup()
    assert statuses == [400, 400, 202, 404, 204]
    assert (receiver.refused, receiver.received) == (1, 1)
    assert notification == Notification(uid, "video", {"uid": uid, "task_status": "completed"})
    assert "webhook refused" in caplog.text
    with pytest.raises(ConfigurationError, match="not serving"):
        _ = receiver.url
    with pytest.raises(ConfigurationError, match="start with '/'"):
        WebhookReceiver(provider, path="hooks")


# -- the engine's fallback with a source of one's own -------------------------------------------


class Manual:
    """A push source driven by the test."""

    def __init__(self) -> None:
        self.notifications = Notifications()

    async def start(self, transport: Transport) -> None:
        self.notifications.set_live(True)

    async def aclose(self) -> None:
        self.notifications.set_live(False)


async def test_a_notification_not_understood_is_logged_and_the_job_polled(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    source = Manual()
    sim.plan_next("complete", queue_delay=0.0, render_time=2.0)
    async with magichour(sim, push=source) as client:
        job = await client.submit(IMAGE)
        odd = Notification(job.job_id, "image", {"odd": True})
        source.notifications.publish(odd)  # kept for the wait: it stands for the first poll

        def on_state(state: Any) -> None:
            if state.status is not Status.COMPLETE:
                source.notifications.publish(odd)

        with caplog.at_level(logging.WARNING, logger="pollkit.engine"):
            final = await client.wait(job.job_id, kind=job.kind, on_state=on_state)
    assert final.status is Status.COMPLETE
    assert "notification not understood, polling" in caplog.text
    assert status_requests(sim, job.job_id) >= 2


async def test_hub_delivers_only_to_subscribers_and_wakes_them_when_it_goes_down() -> None:
    hub = Notifications()
    hub.set_live(True)
    hub.publish(Notification("a", None, {}))  # nobody waits: dropped
    with hub.subscribe("a") as first, hub.subscribe("a") as second, hub.subscribe("b") as other:
        hub.publish(Notification("a", None, {"n": 1}))
        assert (await first.next(1)) == (await second.next(1)) == Notification("a", None, {"n": 1})
        assert await other.next(0.01) is None  # the timeout
        waiting = asyncio.ensure_future(other.next(10))
        await asyncio.sleep(0)
        hub.set_live(False)
        assert await waiting is None  # woken at once, to poll
    assert hub.received == 2
    assert not hub._subscribers


async def test_hub_keeps_what_came_early_for_the_jobs_this_client_submitted_while_live() -> None:
    hub = Notifications()
    hub.expect("early")  # not live yet: nothing is promised
    hub.set_live(True)
    hub.expect("mine")
    hub.expect("dropped")
    for n in range(3):
        hub.publish(Notification("mine", None, {"n": n}))
    hub.publish(Notification("theirs", None, {}))  # not submitted here: dropped
    with hub.subscribe("mine") as mine, hub.subscribe("theirs") as theirs:
        assert mine.expected
        assert not theirs.expected
        assert [(await mine.next(1)) for _ in range(3)] == [
            Notification("mine", None, {"n": n}) for n in range(3)
        ]
        assert await theirs.next(0.01) is None
    with hub.subscribe("mine") as again:
        assert not again.expected  # one wait was promised, not every later one
    hub.set_live(False)  # a notification may be lost while down: the promise is void
    hub.set_live(True)
    with hub.subscribe("dropped") as late, hub.subscribe("early") as first:
        assert not late.expected
        assert not first.expected


def test_blocking_client_with_a_stream() -> None:
    with ThreadedSimulator(SCENARIO) as sim:
        provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        stream = StatusStream(sim.event_stream_url("magichour"), headers=headers)
        with Client(provider, cadence=CADENCE, retry=FAST_RETRY, push=stream) as client:
            job = client.submit(IMAGE)
            result = client.check_result(job.job_id, download_outputs=False, kind="image")
        assert result.status is Status.COMPLETE
        assert job_stats(sim.stats(), job.job_id)["status_requests"] == 1
