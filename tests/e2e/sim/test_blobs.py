"""Blobs: deterministic bytes of any size, by range, over HTTP and without it."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest

from pollkit.sim import Simulator
from pollkit.sim.transfer._blobs import BLOCK_SIZE, blob_chunks, blob_etag, blob_sha256

MIB = 1024 * 1024


def _blob(size: int, seed: int = 0) -> bytes:
    return b"".join(blob_chunks(size, seed))


def test_chunks_are_deterministic_and_at_most_one_block() -> None:
    chunks = list(blob_chunks(3 * BLOCK_SIZE + 5, 1))
    assert [len(chunk) for chunk in chunks] == [BLOCK_SIZE] * 3 + [5]
    assert b"".join(chunks) == _blob(3 * BLOCK_SIZE + 5, 1)
    assert len(set(chunks[:3])) == 3  # every block is told apart


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 1), (5, 9), (BLOCK_SIZE - 3, BLOCK_SIZE + 3), (BLOCK_SIZE, 2 * BLOCK_SIZE), (7, None)],
)
def test_any_range_is_a_slice_of_the_whole(start: int, end: int | None) -> None:
    size = 2 * BLOCK_SIZE + 10
    whole = _blob(size, 3)
    assert b"".join(blob_chunks(size, 3, start, end)) == whole[start:end]


def test_seed_and_size_both_change_the_bytes() -> None:
    assert _blob(1000, 1) != _blob(1000, 2)
    assert _blob(1000, 1) != _blob(1001, 1)[:1000]
    assert _blob(5, 9) != _blob(5, 10)  # even tiny blobs depend on the seed
    assert blob_etag(1000, 1) == blob_etag(1000, 1)
    assert len({blob_etag(1000, 1), blob_etag(1000, 2), blob_etag(1001, 1)}) == 3


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4), (0, 11)])
def test_bad_ranges_are_rejected(start: int, end: int | None) -> None:
    with pytest.raises(ValueError, match="start"):
        blob_chunks(10, 0, start, end)
    with pytest.raises(ValueError, match="size"):
        blob_chunks(-1, 0)


def test_sha256_matches_the_bytes() -> None:
    data = _blob(BLOCK_SIZE + 1, 4)
    assert blob_sha256(BLOCK_SIZE + 1, 4) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, MIB + 1])
async def test_blob_over_http(sim: Simulator, size: int) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/blobs/data.bin", params={"size": size, "seed": 5}) as response,
    ):
        assert response.status == 200
        body = await response.read()
    assert body == _blob(size, 5)
    assert hashlib.sha256(body).hexdigest() == blob_sha256(size, 5)
    headers = response.headers
    assert headers["Content-Length"] == str(size)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["ETag"] == blob_etag(size, 5)
    assert headers["Accept-Ranges"] == "bytes"
    assert "Last-Modified" in headers
    assert headers["Content-Disposition"] == 'attachment; filename="data.bin"'
    assert sim.stats()["requests"]["blob_bytes_served"] == size


async def test_a_64_mib_blob_streams_with_the_expected_digest(sim: Simulator) -> None:
    size = 64 * MIB
    digest = hashlib.sha256()
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/blobs/big.bin?size={size}") as response,
    ):
        assert response.headers["Content-Length"] == str(size)
        async for chunk in response.content.iter_chunked(MIB):
            digest.update(chunk)
    assert digest.hexdigest() == blob_sha256(size, 0)  # seed defaults to 0


async def test_ranges_if_range_and_head(sim: Simulator) -> None:
    size = 2 * BLOCK_SIZE + 100
    whole = _blob(size)
    url = f"{sim.url}/_sim/blobs/r.bin?size={size}"
    etag = blob_etag(size, 0)
    async with aiohttp.ClientSession() as http:
        first, last = BLOCK_SIZE - 10, BLOCK_SIZE + 9
        async with http.get(url, headers={"Range": f"bytes={first}-{last}"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
            assert await response.read() == whole[first : last + 1]
        async with http.get(url, headers={"Range": "bytes=-50"}) as response:
            assert response.status == 206
            assert await response.read() == whole[-50:]
        async with http.get(url, headers={"Range": f"bytes={size}-"}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == f"bytes */{size}"
        resume = {"Range": f"bytes={BLOCK_SIZE}-", "If-Range": etag}
        async with http.get(url, headers=resume) as response:
            assert response.status == 206
            assert await response.read() == whole[BLOCK_SIZE:]
        stale = {"Range": f"bytes={BLOCK_SIZE}-", "If-Range": blob_etag(size, 1)}
        async with http.get(url, headers=stale) as response:
            assert response.status == 200
            assert await response.read() == whole
        async with http.head(url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            assert response.headers["ETag"] == etag
            assert await response.read() == b""


@pytest.mark.parametrize("query", ["", "?size=-1", "?size=abc", "?size=10&seed=x"])
async def test_bad_blob_queries_are_400(sim: Simulator, query: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/blobs/x.bin{query}") as response,
    ):
        assert response.status == 400
        assert "message" in await response.json()


async def test_the_name_is_quoted_safely_in_the_disposition(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/blobs/a%22b%5Cc.bin?size=1") as response,
    ):
        assert response.headers["Content-Disposition"] == r'attachment; filename="a\"b\\c.bin"'


async def test_a_non_ascii_name_gets_a_utf8_filename_star(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim.url}/_sim/blobs/%C3%A9t%C3%A9.bin?size=1") as response,
    ):
        assert response.headers["Content-Disposition"] == (
            "attachment; filename=\"_t_.bin\"; filename*=UTF-8''%C3%A9t%C3%A9.bin"
        )
