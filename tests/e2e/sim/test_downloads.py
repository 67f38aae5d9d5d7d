"""Output files: byte-exact downloads, Range and If-Range, HEAD, signatures and expiry."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from pollkit.sim import Simulator
from tests.e2e.sim.helpers import IMAGE_BODY, MANUAL, VIDEO_BODY, create, get_project, parse_png


async def _complete(
    sim: Simulator, http: aiohttp.ClientSession, kind: str = "image"
) -> tuple[str, list[str]]:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    if kind == "image":
        job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    else:
        job_id = await create(http, "/v1/text-to-video", VIDEO_BODY)
    project = await get_project(http, kind, job_id)
    return job_id, [download["url"] for download in project["downloads"]]


def _outputs(sim: Simulator, job_id: str) -> list[dict[str, Any]]:
    (row,) = [job for job in sim.stats()["jobs"] if job["id"] == job_id]
    outputs: list[dict[str, Any]] = row["outputs"]
    return outputs


async def test_downloads_match_the_stats_digests(sim: Simulator) -> None:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
        job_id, urls = await _complete(sim, http)
    outputs = _outputs(sim, job_id)
    assert [output["name"] for output in outputs] == ["output-0.png", "output-1.png"]
    bodies = []
    async with aiohttp.ClientSession() as plain:  # no Authorization: files need none
        for url, output in zip(urls, outputs, strict=True):
            async with plain.get(url, allow_redirects=False) as response:
                assert response.status == 200
                assert response.content_type == "image/png"
                body = await response.read()
            assert response.headers["Content-Length"] == str(len(body)) == str(output["size"])
            assert response.headers["ETag"] == f'"{output["sha256"]}"'
            assert response.headers["Accept-Ranges"] == "bytes"
            assert "Last-Modified" in response.headers
            assert hashlib.sha256(body).hexdigest() == output["sha256"]
            assert urlsplit(url).path == output["url_path"]
            assert parse_png(body)[:2] == (256, 256)
            bodies.append(body)
    assert bodies[0] != bodies[1]
    assert sim.stats()["requests"]["file_bytes_served"] == sum(map(len, bodies))


async def test_video_file(sim: Simulator, http: aiohttp.ClientSession) -> None:
    job_id, (url,) = await _complete(sim, http, "video")
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "video/mp4"
        body = await response.read()
    assert len(body) == sim.scenario.video_bytes
    assert body[4:8] == b"ftyp"
    assert hashlib.sha256(body).hexdigest() == _outputs(sim, job_id)[0]["sha256"]


async def test_head_has_headers_and_no_body(sim: Simulator, http: aiohttp.ClientSession) -> None:
    job_id, urls = await _complete(sim, http)
    async with http.head(urls[0]) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(_outputs(sim, job_id)[0]["size"])
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == b""


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
async def test_range_requests(
    sim: Simulator, http: aiohttp.ClientSession, header: str, first: int, last: int | None
) -> None:
    _, urls = await _complete(sim, http, "video")
    async with http.get(urls[0]) as response:
        whole = await response.read()
    size = len(whole)
    async with http.get(urls[0], headers={"Range": header}) as response:
        assert response.status == 206
        part = await response.read()
        expected = whole[first : None if last is None else last + 1]
        assert part == expected
        start = first % size
        assert response.headers["Content-Range"] == f"bytes {start}-{start + len(part) - 1}/{size}"
        assert response.headers["Content-Length"] == str(len(part))


async def test_unsatisfiable_range_is_416(sim: Simulator, http: aiohttp.ClientSession) -> None:
    job_id, urls = await _complete(sim, http)
    size = _outputs(sim, job_id)[0]["size"]
    async with http.get(urls[0], headers={"Range": f"bytes={size}-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{size}"


async def test_if_range(sim: Simulator, http: aiohttp.ClientSession) -> None:
    _, urls = await _complete(sim, http)
    async with http.get(urls[0]) as response:
        etag = response.headers["ETag"]
        modified = response.headers["Last-Modified"]
        whole = await response.read()
    for validator in (etag, modified):
        headers = {"Range": "bytes=10-", "If-Range": validator}
        async with http.get(urls[0], headers=headers) as response:
            assert response.status == 206
            assert await response.read() == whole[10:]
    for stale in ('"0123"', f"W/{etag}", "Tue, 01 Jan 2019 00:00:00 GMT"):
        headers = {"Range": "bytes=10-", "If-Range": stale}
        async with http.get(urls[0], headers=headers) as response:
            assert response.status == 200
            assert await response.read() == whole


@pytest.mark.parametrize("scenario", [MANUAL.replace(url_ttl=60.0)])
async def test_expired_url_is_403_and_a_new_get_issues_a_fresh_one(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    job_id, urls = await _complete(sim, http)
    async with http.get(urls[0]) as response:
        assert response.status == 200
    sim.clock.advance(120)
    async with http.get(urls[0]) as response:
        assert response.status == 403
        assert response.content_type == "application/json"
        assert "expired" in (await response.json())["message"]
    fresh = (await get_project(http, "image", job_id))["downloads"][0]["url"]
    assert fresh != urls[0]
    async with http.get(fresh) as response:
        assert response.status == 200


async def test_expiry_on_a_fast_clock() -> None:
    # Real time makes the URL expire here: 1000 simulated seconds per real second.
    async with Simulator(MANUAL.replace(time_scale=1000.0, url_ttl=2.0)) as sim:
        sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
        headers = {"Authorization": f"Bearer {sim.api_key}"}
        async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
            job_id = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
            url = (await get_project(http, "image", job_id))["downloads"][0]["url"]
            expires = int(parse_qs(urlsplit(url).query)["expires"][0])
            # Waits a few real milliseconds for the fast clock; nothing else to wait on.
            while sim.clock.wall(sim.clock.now()) <= expires:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            async with http.get(url) as response:
                assert response.status == 403


@pytest.mark.parametrize("tamper", ["sig", "expires", "path", "missing"])
async def test_bad_signature_is_403(
    sim: Simulator, http: aiohttp.ClientSession, tamper: str
) -> None:
    _, urls = await _complete(sim, http)
    parts = urlsplit(urls[0])
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    path = parts.path
    if tamper == "sig":
        query["sig"] = "0" * 64
    elif tamper == "expires":
        query["expires"] = str(int(query["expires"]) + 3600)
    elif tamper == "path":
        path = path.replace("output-0", "output-1")
    else:
        query = {}
    async with http.get(f"{parts.scheme}://{parts.netloc}{path}?{urlencode(query)}") as response:
        assert response.status == 403


async def test_unfinished_job_has_no_files(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.plan_next(outcome="complete", queue_delay=0, render_time=0)
    done = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    url = (await get_project(http, "image", done))["downloads"][0]["url"]
    pending = await create(http, "/v1/ai-image-generator", IMAGE_BODY)
    # Sign a URL for the pending job the same way the server would, with its own key.
    state = sim._state  # the server's internals: no public way to sign for a pending job
    path = urlsplit(url).path.replace(done, pending)
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    signed = f"{sim.url}{path}?expires={expires}&sig={state.signature(path, expires)}"
    async with http.get(signed) as response:
        assert response.status == 404


@pytest.mark.parametrize("scenario", [MANUAL.replace(basename="unique")])
async def test_unique_basenames(sim: Simulator, http: aiohttp.ClientSession) -> None:
    job_id, urls = await _complete(sim, http)
    assert [urlsplit(url).path.rsplit("/", 1)[1] for url in urls] == [
        f"{job_id}-0.png",
        f"{job_id}-1.png",
    ]
    async with http.get(urls[1]) as response:
        assert response.status == 200


async def test_per_project_basenames_collide_across_projects(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, first = await _complete(sim, http)
    _, second = await _complete(sim, http)
    assert urlsplit(first[0]).path.rsplit("/", 1)[1] == "output-0.png"
    assert urlsplit(first[0]).path.rsplit("/", 1)[1] == urlsplit(second[0]).path.rsplit("/", 1)[1]
    assert first[0] != second[0]
