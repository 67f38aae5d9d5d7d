"""The transport and the client's error mapping, with a fake network (aioresponses)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pollkit import (
    AsyncClient,
    AuthenticationError,
    ConnectError,
    InvalidRequest,
    MagicHour,
    NotFound,
    ProtocolError,
    RateLimited,
    ReadTimeout,
    RetryPolicy,
    ServerError,
    TransportError,
)
from pollkit.core import retry as retry_module
from pollkit.transport._errors import transport_error
from tests.fakenet import aioresponses

KEY = "mhk_live_do_not_leak"
BASE = "http://api.test"
PROJECT = {
    "id": "p1",
    "name": None,
    "status": "queued",
    "type": "AI_IMAGE",
    "image_count": 1,
    "created_at": "2025-06-03T10:15:00.000Z",
    "enabled": True,
    "credits_charged": 5,
    "total_frame_cost": 5,
    "downloads": [],
    "error": None,
}
IMAGE = re.compile(rf"^{BASE}/v1/image-projects/p1$")
VIDEO = re.compile(rf"^{BASE}/v1/video-projects/p1$")
FAST_RETRY = RetryPolicy(initial=0.001, maximum=0.002, max_attempts=4)


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    async with AsyncClient(MagicHour(api_key=KEY, base_url=BASE), retry=FAST_RETRY) as c:
        yield c


def calls(mocked: aioresponses) -> int:
    return sum(len(v) for v in mocked.requests.values())


async def test_get_sends_bearer_auth_and_parses(client: AsyncClient) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, payload=PROJECT)
        state = await client.get("p1", kind="image")
        (request,) = next(iter(mocked.requests.values()))
    assert state.status.value == "queued"
    assert request.kwargs["headers"]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("status", "body", "error", "server_message"),
    [
        (401, {"message": "Unauthorized"}, AuthenticationError, "Unauthorized"),
        (403, {"message": "Forbidden"}, AuthenticationError, "Forbidden"),
        (404, {"message": "Not Found"}, NotFound, "Not Found"),
        (400, {"message": "Missing request body"}, InvalidRequest, "Missing request body"),
        (
            422,
            {"detail": [{"loc": ["body", "x"], "msg": "field required"}]},
            InvalidRequest,
            "field required",
        ),
    ],
)
async def test_client_errors_fail_at_once_with_the_server_message(
    client: AsyncClient, status: int, body: object, error: type[Exception], server_message: str
) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, status=status, payload=body, repeat=True)
        with pytest.raises(error) as info:
            await client.get("p1", kind="image")
        assert calls(mocked) == 1
    exc = info.value
    assert exc.status_code == status  # type: ignore[attr-defined]
    assert exc.server_message == server_message  # type: ignore[attr-defined]
    assert str(exc) == f"get project job p1: HTTP {status}: {server_message}"
    assert KEY not in str(exc)
    assert KEY not in repr(exc)


async def test_validation_details_are_kept(client: AsyncClient) -> None:
    details = [{"loc": ["body", "image_count"], "msg": "too big", "type": "value_error"}]
    with aioresponses() as mocked:
        mocked.get(IMAGE, status=422, payload={"detail": details})
        with pytest.raises(InvalidRequest) as info:
            await client.get("p1", kind="image")
    assert info.value.details == details


async def test_5xx_are_retried_then_succeed(client: AsyncClient) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, status=500, payload={"message": "boom"})
        mocked.get(IMAGE, status=503, payload={"message": "busy"})
        mocked.get(IMAGE, payload=PROJECT)
        state = await client.get("p1", kind="image")
        assert calls(mocked) == 3
    assert state.job_id == "p1"


async def test_retries_give_up_after_max_attempts(client: AsyncClient) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, status=502, payload={"message": "bad gateway"}, repeat=True)
        with pytest.raises(ServerError, match="HTTP 502: bad gateway"):
            await client.get("p1", kind="image")
        assert calls(mocked) == FAST_RETRY.max_attempts


async def test_429_carries_retry_after(client: AsyncClient) -> None:
    single = RetryPolicy(max_attempts=1)
    async with AsyncClient(MagicHour(api_key=KEY, base_url=BASE), retry=single) as one_try:
        with aioresponses() as mocked:
            mocked.get(
                IMAGE, status=429, payload={"message": "slow down"}, headers={"Retry-After": "7"}
            )
            with pytest.raises(RateLimited) as info:
                await one_try.get("p1", kind="image")
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (aiohttp.ClientConnectionError("refused"), ConnectError),
        (aiohttp.ServerDisconnectedError(), ConnectError),
        (asyncio.TimeoutError(), ReadTimeout),
    ],
)
async def test_socket_errors_are_mapped_and_retried(
    client: AsyncClient, exception: Exception, error: type[Exception]
) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, exception=exception, repeat=True)
        with pytest.raises(error) as info:
            await client.get("p1", kind="image")
        assert calls(mocked) == FAST_RETRY.max_attempts
    assert isinstance(info.value.__cause__, type(exception))


async def test_connection_errors_not_retried_when_switched_off() -> None:
    policy = FAST_RETRY.model_copy(update={"retry_connection_errors": False})
    async with AsyncClient(MagicHour(api_key=KEY, base_url=BASE), retry=policy) as c:
        with aioresponses() as mocked:
            mocked.get(IMAGE, exception=aiohttp.ClientConnectionError("refused"), repeat=True)
            with pytest.raises(ConnectError):
                await c.get("p1", kind="image")
            assert calls(mocked) == 1


async def test_html_error_page_and_non_json_success(client: AsyncClient) -> None:
    with aioresponses() as mocked:
        mocked.get(
            IMAGE, status=404, body="<html><h1>Not Found</h1></html>", content_type="text/html"
        )
        with pytest.raises(NotFound, match=r"HTTP 404: Not Found \(an HTML page"):
            await client.get("p1", kind="image")
        mocked.get(IMAGE, status=200, body="<html>maintenance</html>", content_type="text/html")
        with pytest.raises(ProtocolError, match=r"reply is not JSON \(HTTP 200, text/html\)"):
            await client.get("p1", kind="image")


async def test_unknown_kind_falls_through_404_to_the_video_route(client: AsyncClient) -> None:
    with aioresponses() as mocked:
        mocked.get(IMAGE, status=404, payload={"message": "Not Found"})
        mocked.get(VIDEO, payload=PROJECT | {"type": "TEXT_TO_VIDEO", "download": None})
        state = await client.get("p1")
    assert state.kind == "video"


async def test_submit_is_not_retried_on_5xx_but_is_on_429(client: AsyncClient) -> None:
    spec = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "x"}}
    url = f"{BASE}/v1/ai-image-generator"
    with aioresponses() as mocked:
        mocked.post(url, status=500, payload={"message": "boom"}, repeat=True)
        with pytest.raises(ServerError):
            await client.submit(spec)
        assert calls(mocked) == 1
    with aioresponses() as mocked:
        mocked.post(url, status=429, payload={"message": "slow"}, headers={"Retry-After": "0"})
        mocked.post(url, payload={"id": "new", "credits_charged": 5, "frame_cost": 5})
        submission = await client.submit(spec)
        assert calls(mocked) == 2
    assert (submission.job_id, submission.kind) == ("new", "image")


async def test_user_session_is_used_and_not_closed() -> None:
    async with aiohttp.ClientSession() as session:
        async with AsyncClient(MagicHour(api_key=KEY, base_url=BASE), session=session) as c:
            with aioresponses() as mocked:
                mocked.get(IMAGE, payload=PROJECT)
                await c.get("p1", kind="image")
        assert not session.closed


async def test_a_flux0_time_budget_ends_the_retries_after_three_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/apis/flux0.md#retries: initial 1 ms, maximum 50 ms, exponent 1.1, a 100 ms budget,
    # and up to 1 s of jitter added to each wait. The jitter is pinned at 0.5 s so every wait is
    # capped at 50 ms: attempts at 0, 50 and 100 ms, then the budget is spent. (With free
    # jitter a draw under 50 ms shortens a wait and lets a fourth or fifth attempt in.)
    monkeypatch.setattr(retry_module, "_RANDOM", _Fixed(0.5))
    policy = RetryPolicy.from_backoff(
        initial_interval=1, max_interval=50, exponent=1.1, max_elapsed_time=100
    )
    async with AsyncClient(MagicHour(api_key=KEY, base_url=BASE), retry=policy) as client:
        with aioresponses() as mocked:
            mocked.get(IMAGE, status=503, payload={"message": "busy"}, repeat=True)
            with pytest.raises(ServerError, match="HTTP 503: busy"):
                await client.get("p1", kind="image")
            # A fourth only if the event loop woke the last sleep a hair early (clock resolution).
            assert 3 <= calls(mocked) <= 4


class _Fixed(random.Random):
    """A generator whose every draw is the same number."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


class _Key:
    """Enough of aiohttp's ConnectionKey for its connector errors' messages."""

    host, port, ssl = "api.example", 443, True


def _connector(cls: type[aiohttp.ClientConnectorError], error: OSError) -> BaseException:
    key: Any = _Key()
    return cls(key, error)


@pytest.mark.parametrize(
    ("exc", "sent", "kind"),
    [
        (
            _connector(aiohttp.ClientConnectorError, ConnectionRefusedError(111, "x")),
            False,
            ConnectError,
        ),
        (
            _connector(aiohttp.ClientConnectorDNSError, OSError(-2, "Name unknown")),
            False,
            ConnectError,
        ),
        (_connector(aiohttp.ClientConnectorSSLError, OSError(1, "handshake")), False, ConnectError),
        (aiohttp.ServerFingerprintMismatch(b"a", b"b", "api.example", 443), False, ConnectError),
        (aiohttp.ConnectionTimeoutError("connect"), False, ReadTimeout),
        (aiohttp.SocketTimeoutError("read"), True, ReadTimeout),
        (aiohttp.ServerDisconnectedError(), True, ConnectError),
        (aiohttp.ClientOSError(104, "reset by peer"), True, ConnectError),
        (ConnectionResetError(104, "reset"), True, ConnectError),
    ],
)
def test_the_transport_says_whether_a_request_could_have_left(
    exc: BaseException, sent: bool, kind: type[Exception]
) -> None:
    error = transport_error(exc, operation="create image", job_id=None, url="https://x/v1/a?k=s")
    assert isinstance(error, kind)
    assert isinstance(error, TransportError)
    assert error.sent is sent
    assert "k=s" not in str(error)
