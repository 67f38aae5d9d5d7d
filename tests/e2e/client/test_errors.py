"""What an API error carries, for every provider, from the real simulator.

Each error has the status, the server's message, the decoded body and the response headers;
validation errors the server's field details; `str()` is one line naming the operation and the
job; no key anywhere in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pollkit import (
    APIError,
    AsyncClient,
    InvalidRequest,
    MagicHour,
    NotFound,
    Pixy,
    PixyClient,
    Pixyz,
    PixyzClient,
    RateLimited,
    RetryPolicy,
)
from pollkit.sim import Simulator
from tests.helpers import FROZEN

KEY = "key-that-must-never-show-4b1d"
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FROZEN, api_key=KEY) as simulator:
        yield simulator


def _check_common(error: APIError, status: int, operation: str, job: str | None) -> None:
    text = str(error)
    assert error.status_code == status
    assert "\n" not in text
    assert text.startswith(operation)
    if job is not None:
        assert f"job {job}" in text
    assert error.server_message
    assert error.server_message in text
    assert error.body is not None
    assert error.headers.get("Content-Type", "").startswith("application/json")
    assert KEY not in text
    assert KEY not in repr(error)


async def test_magic_hour_not_found_and_rate_limited(sim: Simulator) -> None:
    async with AsyncClient(MagicHour(api_key=KEY, base_url=sim.url), retry=ONCE) as client:
        with pytest.raises(NotFound) as missing:
            await client.get("cmissing", kind="image")
        sim.inject(status=429, count=1, retry_after=7)
        with pytest.raises(RateLimited) as limited:
            await client.get("cmissing", kind="image")
    _check_common(missing.value, 404, "get project", "cmissing")
    assert missing.value.body == {"message": "Not Found"}
    _check_common(limited.value, 429, "get project", "cmissing")
    assert limited.value.headers["Retry-After"] == "7"
    assert limited.value.retry_after == 7.0


async def test_pixy_validation_details_and_not_found(sim: Simulator) -> None:
    provider = Pixy(api_key=KEY, base_url=sim.urls["pixy"])
    async with PixyClient(provider, retry=ONCE) as client:
        with pytest.raises(InvalidRequest) as invalid:
            await client.list_page("image", limit=101)
        unknown = "00000000-0000-4000-8000-000000000000"
        with pytest.raises(NotFound) as missing:
            await client.get(unknown, kind="image")
    _check_common(invalid.value, 422, "list", None)
    assert invalid.value.details[0]["loc"] == ["query", "limit"]
    assert "less than or equal to 100" in str(invalid.value)
    _check_common(missing.value, 404, "get", unknown)
    assert missing.value.body["error"] == "item_not_found"


async def test_pixyz_400_details_and_401_headers(sim: Simulator, tmp_path: Path) -> None:
    provider = Pixyz(api_key=KEY, base_url=sim.urls["pixyz"])
    async with PixyzClient(provider, retry=ONCE) as client:
        with pytest.raises(InvalidRequest) as invalid:
            await client.submit({"process": "no_such_process"})
    _check_common(invalid.value, 400, "submit", None)
    assert "Invalid process 'no_such_process'" in str(invalid.value)
    assert invalid.value.body["detail"]["code"] == 400
    wrong = Pixyz(api_key="wrong-key", base_url=sim.urls["pixyz"])
    async with PixyzClient(wrong, retry=ONCE) as client:
        with pytest.raises(APIError) as refused:
            await client.jobs()
    assert refused.value.status_code == 401
    assert refused.value.headers["WWW-Authenticate"] == "x-api-key"
    assert "Invalid token" in str(refused.value)
    assert "wrong-key" not in str(refused.value)
