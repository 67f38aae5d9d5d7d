"""`WebhookReceiver` facing the internet, over real sockets: the secret in the path, the API's
word over the payload's (a forged completion against a second, attacker's server), the bounds
of the endpoint, and the secret kept out of logs, reprs and errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pollkit import AsyncClient, Cadence, ConfigurationError, MagicHour, Status, WebhookReceiver
from pollkit.push._hub import Notifications
from pollkit.push._webhooks import DEFAULT_MAX_BODY
from pollkit.sim import Scenario, Simulator
from tests.helpers import FAST_RETRY, job_stats, sha256_file

# Jobs take 0.1–0.5 real seconds; a planned job below takes longer, so a forgery comes first.
SCENARIO = Scenario(time_scale=50.0, seed=5, image_size=(16, 16))
CADENCE = Cadence(initial=0.005, maximum=0.02, timeout=20)
IMAGE = {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a kite"}}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SCENARIO) as simulator:
        yield simulator


class Attacker:
    """A second real server on 127.0.0.1 that serves a "result" and counts every request."""

    def __init__(self) -> None:
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(body=b"\x89PNG\r\n\x1a\nnot yours", content_type="image/png")

    async def __aenter__(self) -> Attacker:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def attacker() -> AsyncIterator[Attacker]:
    async with Attacker() as server:
        yield server


def client_for(sim: Simulator, receiver: WebhookReceiver) -> AsyncClient:
    return AsyncClient(receiver.provider, cadence=CADENCE, retry=FAST_RETRY, push=receiver)


async def register(sim: Simulator, url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/webhooks/magichour", json={"url": url}) as reply,
    ):
        assert reply.status == 204


async def forged_completion(sim: Simulator, job_id: str, evil: str) -> dict[str, Any]:
    """A Magic Hour ``image.completed`` webhook for `job_id` whose outputs are `evil`'s: the
    body of a real finished project (so it parses), with the id and URLs swapped."""
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    async with AsyncClient(provider, cadence=CADENCE, retry=FAST_RETRY) as other:
        donor = await other.submit(IMAGE)
        done = await other.wait(donor.job_id, kind="image")
    project = dict(done.raw)
    assert project["status"] == "complete"
    downloads = [{**d, "url": f"{evil}/steal-{i}.png"} for i, d in enumerate(project["downloads"])]
    project.update(id=job_id, downloads=downloads, download=downloads[0])
    return {"type": "image.completed", "payload": project}


async def post(url: str, body: Any = None, *, data: bytes | None = None, **kw: Any) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, data=data, **kw) as reply,
    ):
        return reply.status


# -- the API's word over the payload's ---------------------------------------------------------


async def test_a_forged_completion_ends_no_wait_and_downloads_nothing_from_its_urls(
    sim: Simulator, attacker: Attacker, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    async with client_for(sim, receiver) as client:
        await register(sim, receiver.url)
        sim.plan_next("complete", queue_delay=30.0, render_time=70.0)  # 2 s in real time
        job = await client.submit(IMAGE)
        forged = await forged_completion(sim, job.job_id, attacker.url)
        assert await post(receiver.url, forged) == 204  # well-formed, at the right path
        result = await client.check_result(
            job.job_id, kind="image", download_directory=tmp_path, progress=False
        )
    served = job_stats(sim.stats(), job.job_id)
    assert result.status is Status.COMPLETE
    assert served["status"] == "complete"
    # The real outputs arrived, byte for byte; the attacker's server was never asked.
    assert [sha256_file(p) for p in result.downloaded_paths] == [
        o["sha256"] for o in served["outputs"]
    ]
    assert attacker.requests == 0
    # Two reads: the forged claim, answered "not yet" by the API, and the real completion.
    assert served["status_requests"] == 2
    assert result.polls == 2


async def test_trust_payload_takes_the_payload_as_the_state(
    sim: Simulator, attacker: Attacker, tmp_path: Path
) -> None:
    """The control of the test above: the same forgery, trusted, is believed (which is why
    trust_payload is only for a source the user authenticates)."""
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url), trust_payload=True)
    async with client_for(sim, receiver) as client:
        sim.plan_next("complete", queue_delay=30.0, render_time=70.0)
        job = await client.submit(IMAGE)
        forged = await forged_completion(sim, job.job_id, attacker.url)
        assert await post(receiver.url, forged) == 204
        result = await client.check_result(job.job_id, kind="image", download_directory=tmp_path)
    assert result.status is Status.COMPLETE
    assert job_stats(sim.stats(), job.job_id)["status"] != "complete"  # it was not done
    assert attacker.requests == 2


async def test_webhooks_about_jobs_nobody_waits_for_cost_no_request(sim: Simulator) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    async with client_for(sim, receiver):
        forged = await forged_completion(sim, "cnotourjob", "http://127.0.0.1:9")
        before = sim.stats()["requests"]["total"]
        flood = [
            {**forged, "payload": {**forged["payload"], "id": f"cflood{i}"}} for i in range(100)
        ]
        statuses = await asyncio.gather(*(post(receiver.url, body) for body in flood))
        after = sim.stats()["requests"]["total"]
    assert set(statuses) == {204}
    assert receiver.received == 100
    assert after == before  # not one request to the API


async def test_a_burst_of_hints_for_one_job_reads_it_once_at_a_time(sim: Simulator) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    async with client_for(sim, receiver) as client:
        await register(sim, receiver.url)
        sim.plan_next("complete", queue_delay=30.0, render_time=70.0)
        job = await client.submit(IMAGE)
        forged = await forged_completion(sim, job.job_id, "http://127.0.0.1:9")
        in_flight = 0
        most = 0
        original = client._engine.observe

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await original(*args, **kwargs)
            finally:
                in_flight -= 1

        client._engine.observe = counted  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(client.wait(job.job_id, kind="image"))
        statuses = await asyncio.gather(*(post(receiver.url, forged) for _ in range(40)))
        final = await waiting
    assert set(statuses) == {204}
    assert final.status is Status.COMPLETE
    assert most == 1
    # A read covers every hint queued before it: far fewer reads than hints.
    reads = job_stats(sim.stats(), job.job_id)["status_requests"]
    assert reads < 20


async def test_read_once_joins_the_read_in_flight() -> None:
    hub = Notifications(trusted=False)
    calls = 0
    release = asyncio.Event()

    async def read() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "state"

    joined = [asyncio.ensure_future(hub.read_once("job", read)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*joined) == ["state"] * 5
    assert calls == 1
    assert await hub.read_once("job", read) == "state"  # the next burst reads again
    assert calls == 2


# -- the path, the body, the type --------------------------------------------------------------


async def test_only_the_secret_path_is_served(sim: Simulator) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    await receiver.start()
    try:
        secret = receiver.secret
        assert receiver.url.endswith(f"/pollkit/webhook/{secret}")
        assert len(secret) >= 40
        base = receiver.url.removesuffix(f"/{secret}")
        wrong = [base, f"{base}/", f"{base}/{secret[:-1]}x", f"{base}/{secret}/more", base + "x"]
        statuses = [await post(url, {"type": "image.started"}) for url in wrong]
        async with aiohttp.ClientSession() as session, session.get(receiver.url) as reply:
            statuses.append(reply.status)
        ok = await post(receiver.url, {"type": "video.completed", "payload": {"id": "cx"}})
    finally:
        await receiver.aclose()
    assert statuses == [404] * 6
    assert receiver.refused == 6
    assert (ok, receiver.received) == (204, 1)
    other = WebhookReceiver(MagicHour(api_key="k", base_url=sim.url))
    assert other.secret != secret  # one per receiver


async def test_bodies_over_the_limit_are_413_unread_and_only_json_is_taken(
    sim: Simulator,
) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url), max_body=1000)
    await receiver.start()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 200  # no Content-Length: refused once past the limit

    try:
        big = b'{"type": "image.completed", "pad": "' + b"x" * 1000 + b'"}'
        sized = await post(receiver.url, data=big, headers=JSON)
        streamed = await post(receiver.url, data=chunked(), headers=JSON)
        text = await post(
            receiver.url, data=b'{"type": "x"}', headers={"Content-Type": "text/plain"}
        )
        form = await post(receiver.url, data=b"type=x")
    finally:
        await receiver.aclose()
    assert (sized, streamed, text, form) == (413, 413, 415, 415)
    assert receiver.received == 0
    assert WebhookReceiver(MagicHour(api_key="k")).max_body == DEFAULT_MAX_BODY == 64 * 1024


async def test_a_default_sized_limit_refuses_65_kib(sim: Simulator) -> None:
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url))
    await receiver.start()
    try:
        pad = "x" * (64 * 1024)
        assert await post(receiver.url, {"type": "image.started", "pad": pad}) == 413
        assert (
            await post(
                receiver.url, {"type": "mystery.started", "payload": {}, "pad": pad[:60_000]}
            )
            == 202
        )
    finally:
        await receiver.aclose()


# -- the secret stays secret -------------------------------------------------------------------


async def test_the_secret_is_in_no_log_repr_or_error(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    given = "s3cret-Given-By-The-User-0123456789"
    receiver = WebhookReceiver(MagicHour(api_key=sim.api_key, base_url=sim.url), secret=given)
    assert given not in repr(receiver)
    with caplog.at_level(logging.DEBUG):
        async with client_for(sim, receiver) as client:
            assert receiver.url.endswith(f"/{given}")
            assert given not in repr(receiver)
            await register(sim, receiver.url)
            await post(receiver.url, data=b"{not json", headers=JSON)
            await post(receiver.url, data=b" " * (DEFAULT_MAX_BODY + 1), headers=JSON)
            await post(receiver.url.replace(given, "guess"), {"type": "image.started"})
            job = await client.submit(IMAGE)
            await client.wait(job.job_id, kind="image")
    # The simulator plays the vendor, which is given the URL: its own log is not pollkit's.
    ours = [r for r in caplog.records if not r.name.startswith("pollkit.sim")]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert "webhook refused" in logged
    assert "webhook receiver listening" in logged
    assert given not in logged
    for bad in (given + " ", "short", "with/slash-0123456789", "é" * 20):
        with pytest.raises(ConfigurationError, match="webhook secret must be") as caught:
            WebhookReceiver(MagicHour(api_key="k"), secret=bad)
        assert bad not in str(caught.value)
        assert given not in str(caught.value)


def test_a_public_url_is_what_the_vendor_is_given() -> None:
    receiver = WebhookReceiver(
        MagicHour(api_key="k"), public_url="https://hooks.example.com/pollkit/webhook/"
    )
    assert receiver.url == f"https://hooks.example.com/pollkit/webhook/{receiver.secret}"
    assert receiver.secret not in repr(receiver)
    with pytest.raises(ConfigurationError, match="public_url must be"):
        WebhookReceiver(MagicHour(api_key="k"), public_url="hooks.example.com")
    with pytest.raises(ConfigurationError, match="max_body must be"):
        WebhookReceiver(MagicHour(api_key="k"), max_body=0)
