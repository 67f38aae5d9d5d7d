"""Download switches and body faults, as a raw client sees them on files, blobs and archives."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from pollkit.sim import Simulator
from pollkit.sim.transfer._blobs import blob_chunks, blob_etag
from tests.e2e.sim.helpers import IMAGE_BODY, MANUAL, VIDEO_BODY, create, get_project, raw_get

MIB = 1024 * 1024
NO_FAULTS = {"truncate": 0, "reset_mid": 0, "stall": 0}
# What aiohttp raises when a body breaks off: a short body, a disconnect or a reset.
BROKEN_BODY = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def _blob(size: int) -> bytes:
    return b"".join(blob_chunks(size, 0))


def _blob_url(sim: Simulator, size: int) -> str:
    return f"{sim.url}/_sim/blobs/f.bin?size={size}"


async def _video_url(sim: Simulator, http: aiohttp.ClientSession) -> tuple[str, str]:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    job_id = await create(http, "/v1/text-to-video", VIDEO_BODY)
    return job_id, (await get_project(http, "video", job_id))["downloads"][0]["url"]


def _faults(sim: Simulator) -> dict[str, int]:
    faults: dict[str, int] = sim.stats()["requests"]["download_faults"]
    return faults


# -- random faults from the scenario ------------------------------------------------------


@pytest.mark.parametrize("scenario", [MANUAL.replace(truncate_rate=1.0)])
async def test_truncate_rate_sends_half_the_body_then_closes(sim: Simulator) -> None:
    size = 100_000
    whole = _blob(size)
    reply = await raw_get(_blob_url(sim, size))
    assert reply.status == 200
    assert reply.headers["content-length"] == str(size)  # the whole length is promised
    assert reply.body == whole[: size // 2]
    assert not reply.reset  # closed, not reset
    ranged = await raw_get(_blob_url(sim, size), {"Range": "bytes=1000-1999"})
    assert ranged.status == 206
    assert ranged.headers["content-length"] == "1000"
    assert ranged.body == whole[1000:1500]
    async with aiohttp.ClientSession() as http, http.get(_blob_url(sim, size)) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    requests = sim.stats()["requests"]
    assert requests["download_faults"] == {**NO_FAULTS, "truncate": 3}
    assert requests["injected"] == 3
    assert requests["by_status"] == {"200": 2, "206": 1}


@pytest.mark.parametrize("scenario", [MANUAL.replace(truncate_rate=1.0)])
async def test_bodies_too_small_to_break_and_heads_use_no_fault(sim: Simulator) -> None:
    one = await raw_get(_blob_url(sim, 1))
    assert (one.status, one.headers["content-length"], one.body, one.reset) == (
        200,
        "1",
        b"",
        False,
    )
    empty = await raw_get(_blob_url(sim, 0))
    assert (empty.status, empty.body, empty.reset) == (200, b"", False)
    async with aiohttp.ClientSession() as http, http.head(_blob_url(sim, 10)) as response:
        assert response.status == 200
    assert _faults(sim) == {**NO_FAULTS, "truncate": 1}  # only the one-byte body broke


@pytest.mark.parametrize("scenario", [MANUAL.replace(reset_rate=1.0)])
async def test_reset_rate_resets_mid_body(sim: Simulator) -> None:
    size = 100_000
    reply = await raw_get(_blob_url(sim, size))
    assert reply.reset
    assert len(reply.body) < size
    with pytest.raises(BROKEN_BODY):
        async with aiohttp.ClientSession() as http, http.get(_blob_url(sim, size)) as response:
            await response.read()
    assert _faults(sim)["reset_mid"] >= 2


@pytest.mark.parametrize("scenario", [MANUAL.replace(stall_rate=1.0, stall_seconds=0.01)])
async def test_stall_rate_pauses_and_completes(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as http, http.get(_blob_url(sim, 5000)) as response:
        assert await response.read() == _blob(5000)
    assert _faults(sim) == {**NO_FAULTS, "stall": 1}


async def test_random_body_faults_are_seeded_and_counted() -> None:
    scenario = MANUAL.replace(seed=3, truncate_rate=0.3, reset_rate=0.2)
    size = 20_000

    async def run() -> list[str]:
        outcomes = []
        async with Simulator(scenario) as sim:
            for _ in range(30):
                reply = await raw_get(_blob_url(sim, size))
                if reply.reset:
                    outcomes.append("reset_mid")
                else:
                    outcomes.append("truncate" if len(reply.body) < size else "ok")
            faults = _faults(sim)
        assert faults == {
            "truncate": outcomes.count("truncate"),
            "reset_mid": outcomes.count("reset_mid"),
            "stall": 0,
        }
        return outcomes

    first = await run()
    assert first == await run()
    assert first.count("truncate") >= 3
    assert first.count("reset_mid") >= 2
    assert first.count("ok") >= 5


# -- planned faults -----------------------------------------------------------------------


async def test_injected_truncate_on_an_output_file(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, url = await _video_url(sim, http)
    size = sim.scenario.video_bytes
    sim.inject(kind="truncate", count=1)  # default prefix: every download route
    async with http.head(url) as response:  # a HEAD sends no body: the fault waits
        assert response.status == 200
    reply = await raw_get(url)
    assert reply.headers["content-length"] == str(size)
    assert len(reply.body) == size // 2
    assert not reply.reset
    async with http.get(url) as response:
        assert len(await response.read()) == size  # used up
    assert _faults(sim) == {**NO_FAULTS, "truncate": 1}


async def test_injected_reset_mid_on_a_blob(sim: Simulator) -> None:
    size = 100_000
    sim.inject(kind="reset_mid", count=1, path_prefix="/_sim/blobs/", method="GET")
    reply = await raw_get(_blob_url(sim, size))
    assert reply.reset
    assert len(reply.body) < size
    assert (await raw_get(_blob_url(sim, size))).body == _blob(size)
    assert sim.stats()["requests"]["injected"] == 1


async def test_injected_reset_mid_on_an_archive(sim: Simulator) -> None:
    sim.inject(kind="reset_mid", count=2, path_prefix="/_sim/archives/")
    with pytest.raises(BROKEN_BODY):
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{sim.url}/_sim/archives/lying.zip") as response,
        ):
            await response.read()


async def test_injected_stall_pauses_the_body(sim: Simulator) -> None:
    sim.inject(kind="stall", stall_seconds=0.2, count=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as http, http.get(_blob_url(sim, 65536)) as response:
        body = await response.read()
    assert loop.time() - started >= 0.2
    assert body == _blob(65536)
    assert _faults(sim) == {**NO_FAULTS, "stall": 1}


async def _read_into(http: aiohttp.ClientSession, url: str, got: bytearray) -> None:
    async with http.get(url) as response:
        async for chunk in response.content.iter_any():
            got += chunk


async def test_a_client_that_gives_up_on_a_stall_resumes_the_range(sim: Simulator) -> None:
    size = 200_000
    url = _blob_url(sim, size)
    sim.inject(kind="stall", stall_seconds=0.25, count=1)
    got = bytearray()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=0.05)) as http:
        with pytest.raises(aiohttp.ServerTimeoutError):
            await _read_into(http, url, got)
        assert len(got) == size // 2
        resume = {"Range": f"bytes={len(got)}-", "If-Range": blob_etag(size, 0)}
        async with http.get(url, headers=resume) as response:
            assert response.status == 206
            got += await response.read()
    assert bytes(got) == _blob(size)


async def test_body_faults_over_http(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.post("/_sim/inject", json={"kind": "truncate", "count": 1}) as response:
        assert response.status == 200
        rule = (await response.json())["injected"]
    assert rule["path_prefix"] == "/_sim/"
    assert rule["stall_seconds"] is None
    assert len((await raw_get(_blob_url(sim, 1000))).body) == 500
    body = {"kind": "stall", "stall_seconds": 0, "path_prefix": "/_sim/blobs/"}
    async with http.post("/_sim/inject", json=body) as response:
        assert response.status == 200
    assert (await raw_get(_blob_url(sim, 1000))).body == _blob(1000)
    assert _faults(sim) == {"truncate": 1, "reset_mid": 0, "stall": 1}
    for bad in (
        {"kind": "truncate", "stall_seconds": 1},
        {"kind": "stall", "stall_seconds": -1},
        {"kind": "melt"},
    ):
        async with http.post("/_sim/inject", json=bad) as response:
            assert response.status == 400, bad
            assert "message" in await response.json()


def test_stall_seconds_only_for_stalls() -> None:
    with pytest.raises(ValueError, match="stall_seconds"):
        Simulator().inject(kind="reset_mid", stall_seconds=1.0)


@pytest.mark.parametrize("scenario", [MANUAL.replace(truncate_rate=1.0)])
async def test_body_faults_leave_api_and_control_routes_alone(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.inject(kind="reset_mid", count=1, path_prefix="/")
    job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    assert (await get_project(http, "image", job_id))["id"] == job_id
    async with http.get("/_sim/stats") as response:
        assert (await response.json())["requests"]["download_faults"] == NO_FAULTS
    assert (await raw_get(_blob_url(sim, 1000))).reset  # planned before random
    assert _faults(sim) == {**NO_FAULTS, "reset_mid": 1}


# -- switches -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [MANUAL.replace(range_support=False)])
async def test_without_range_support_every_answer_is_the_whole_body(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    size = 5000
    whole = _blob(size)
    for headers in (
        {"Range": "bytes=10-"},
        {"Range": "bytes=10-", "If-Range": blob_etag(size, 0)},
        {"Range": f"bytes={size}-"},
    ):
        async with http.get(_blob_url(sim, size), headers=headers) as response:
            assert response.status == 200, headers
            assert "Accept-Ranges" not in response.headers
            assert "Content-Range" not in response.headers
            assert await response.read() == whole
    async with http.head(_blob_url(sim, size)) as response:
        assert "Accept-Ranges" not in response.headers
    _, url = await _video_url(sim, http)
    async with http.get(url, headers={"Range": "bytes=0-9"}) as response:
        assert response.status == 200
        assert len(await response.read()) == sim.scenario.video_bytes


@pytest.mark.parametrize("scenario", [MANUAL.replace(etag_changes=True)])
async def test_validators_change_on_every_response(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, url = await _video_url(sim, http)
    seen = []
    for _ in range(2):
        async with http.get(url) as response:
            body = await response.read()
            seen.append((response.headers["ETag"], response.headers["Last-Modified"], body))
    (etag1, modified1, whole), (etag2, modified2, again) = seen
    assert etag1 != etag2
    assert modified1 != modified2
    assert whole == again  # re-uploaded, same bytes
    for validator in (etag1, etag2, modified2):
        headers = {"Range": "bytes=100-", "If-Range": validator}
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            assert await response.read() == whole
    async with http.get(url, headers={"Range": "bytes=100-"}) as response:
        assert response.status == 206  # ranges still work without a validator
    heads = []
    for _ in range(2):
        async with http.head(_blob_url(sim, 10)) as response:
            heads.append(response.headers["ETag"])
    assert heads[0] != heads[1]


@pytest.mark.parametrize("scenario", [MANUAL.replace(bandwidth=float(MIB))])
async def test_bandwidth_paces_the_body(sim: Simulator) -> None:
    size = 256 * 1024
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as http, http.get(_blob_url(sim, size)) as response:
        body = await response.read()
    assert loop.time() - started >= 0.2  # 0.25 s at 1 MiB/s
    assert body == _blob(size)


@pytest.mark.parametrize("scenario", [MANUAL.replace(url_ttl=60.0, bandwidth=2.0 * MIB)])
async def test_a_transfer_in_flight_finishes_after_its_url_expires(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    job_id, url = await _video_url(sim, http)
    size = sim.scenario.video_bytes
    async with http.get(url) as response:
        assert response.status == 200
        etag = response.headers["ETag"]
        first = await response.content.readany()
        assert 0 < len(first) < size
        sim.clock.advance(120)  # the URL expires mid-transfer
        whole = first + await response.read()
    assert len(whole) == size
    async with http.get(url, headers={"Range": "bytes=100-"}) as response:
        assert response.status == 403  # expiry is checked when a request starts
    fresh = (await get_project(http, "video", job_id))["downloads"][0]["url"]
    async with http.get(fresh, headers={"Range": "bytes=100-", "If-Range": etag}) as response:
        assert response.status == 206
        assert await response.read() == whole[100:]
