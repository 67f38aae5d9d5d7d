"""The engine's provider hooks, through a toy API served over real sockets.

Pixy checks its key before anything else; PiXYZ uploads files as multipart, lists a finished
job's outputs apart from its status, needs its key on its own file routes and answers 425 while
an archive is packed. These tests pin the generic side of each hook with a toy provider, so a
provider's own tests only have to show that it uses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pollkit import (
    AsyncClient,
    AuthenticationError,
    Cadence,
    DownloadPolicy,
    JobState,
    NotReady,
    Output,
    PollTimeout,
    Status,
)
from pollkit.providers import FormPart, Provider, Request, Response, Submission
from tests.helpers import FAST_CADENCE, FAST_RETRY

KEY = "toy-secret-key"
PAYLOAD = hashlib.sha256(b"toy").digest() * 1000  # 32 kB


@dataclass
class ToyServer:
    """What the toy API saw, and how it answers."""

    url: str = ""
    requests: list[tuple[str, str]] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)
    verify_status: int = 200
    too_early: int = 0
    status: str = "done"
    uploads: dict[str, bytes] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


def _app(toy: ToyServer) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        toy.requests.append((request.method, request.path))
        toy.keys.append(request.headers.get("x-api-key"))
        response: web.StreamResponse = await handler(request)
        return response

    async def verify(request: web.Request) -> web.Response:
        body = await request.json()
        ok = body.get("api_key") == KEY and toy.verify_status == 200
        return web.json_response({} if ok else {"detail": "bad key"}, status=toy.verify_status)

    async def create(request: web.Request) -> web.Response:
        async for part in await request.multipart():
            assert isinstance(part, aiohttp.BodyPartReader)
            data = await part.read()
            if part.filename:
                toy.uploads[part.filename] = data
            else:
                toy.fields[part.name or ""] = data.decode()
        return web.json_response({"id": "j1"})

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "status": toy.status})

    async def outputs(request: web.Request) -> web.Response:
        return web.json_response({"files": ["a.bin", "b.bin"]})

    async def file(request: web.Request) -> web.Response:
        if request.headers.get("x-api-key") != KEY:
            return web.json_response({"detail": "Invalid token"}, status=401)
        if toy.too_early > 0:
            toy.too_early -= 1
            return web.json_response({"detail": "Too early"}, status=425)
        return web.Response(body=PAYLOAD, content_type="application/octet-stream")

    async def elsewhere(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{toy.url}/free/{request.match_info['name']}")

    async def free(request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/octet-stream")

    app = web.Application(middlewares=[record])
    app.router.add_post("/verify", verify)
    app.router.add_post("/jobs", create)
    app.router.add_get("/jobs/{id}", status)
    app.router.add_get("/jobs/{id}/outputs", outputs)
    app.router.add_get("/files/{name}", file)
    app.router.add_get("/redirect/{name}", elsewhere)
    app.router.add_get("/free/{name}", free)
    return app


@pytest.fixture
async def toy() -> AsyncIterator[ToyServer]:
    server = ToyServer()
    runner = web.AppRunner(_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


class Toy(Provider):
    """A provider with every hook: key check, multipart submit, output listing, file auth."""

    name = "toy"

    def __init__(self, base_url: str, *, files_under: str = "/files") -> None:
        super().__init__()
        self.base_url = base_url
        self._files_under = files_under

    @property
    def secrets(self) -> Sequence[str]:
        return (KEY,)

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": KEY}

    def startup_request(self) -> Request | None:
        return Request("POST", f"{self.base_url}/verify", "verify key", json_body={"api_key": KEY})

    def submit_request(self, spec: Mapping[str, Any]) -> Request:
        form = (
            FormPart("process", value=str(spec["process"])),
            FormPart("file", path=Path(spec["file"])),
        )
        return Request(
            "POST", f"{self.base_url}/jobs", "submit", form=form, headers=self._headers()
        )

    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        return Submission(response.json()["id"], None, observed_at)

    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        url = f"{self.base_url}/jobs/{job_id}"
        return [Request("GET", url, "status", job_id, headers=self._headers())]

    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        body = response.json()
        status = Status.COMPLETE if body["status"] == "done" else Status.QUEUED
        return JobState(self.name, body["id"], status, body["status"], observed_at, raw=body)

    def outputs_request(self, state: JobState) -> Request | None:
        url = f"{self.base_url}/jobs/{state.job_id}/outputs"
        return Request("GET", url, "list outputs", state.job_id, headers=self._headers())

    def parse_outputs(self, response: Response, state: JobState) -> JobState:
        names = response.json()["files"]
        outputs = tuple(
            Output(url=f"{self.base_url}{self._files_under}/{n}", index=i, name=n)
            for i, n in enumerate(names)
        )
        return replace(state, outputs=outputs)

    def download_headers(self, url: str) -> Mapping[str, str]:
        return self._headers() if url.startswith(f"{self.base_url}/") else {}

    def timeout_hint(self, state: JobState | None) -> str | None:
        return "the toy cannot tell a queued job from an unknown one"


def _client(provider: Provider, **kwargs: Any) -> AsyncClient:
    return AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY, **kwargs)


async def test_a_refused_key_check_fails_on_entry_before_any_other_request(
    toy: ToyServer,
) -> None:
    toy.verify_status = 403
    with pytest.raises(AuthenticationError) as caught:
        async with _client(Toy(toy.url)):
            pass  # pragma: no cover - never reached
    assert caught.value.status_code == 403
    assert "verify key" in str(caught.value)
    assert KEY not in str(caught.value)
    assert toy.requests == [("POST", "/verify")]


async def test_any_non_2xx_key_check_counts_as_an_authentication_error(toy: ToyServer) -> None:
    toy.verify_status = 400  # Pixy's SDK: every status other than 200 means an invalid key
    client = _client(Toy(toy.url))
    try:
        with pytest.raises(AuthenticationError):
            await client.get("j1")
        with pytest.raises(AuthenticationError):
            await client.get("j1")  # not remembered as done: checked again, refused again
    finally:
        await client.aclose()
    assert toy.requests == [("POST", "/verify"), ("POST", "/verify")]


async def test_the_key_is_checked_once_then_every_call_goes_straight_through(
    toy: ToyServer,
) -> None:
    toy.status = "queued"
    async with _client(Toy(toy.url)) as client:
        await client.get("j1")
        await client.get("j1")
    assert toy.requests == [("POST", "/verify"), ("GET", "/jobs/j1"), ("GET", "/jobs/j1")]


async def test_multipart_submit_sends_fields_and_file_and_reports_upload_bytes(
    toy: ToyServer, tmp_path: Path
) -> None:
    source = tmp_path / "model.step"
    source.write_bytes(PAYLOAD)
    counted: list[int] = []
    async with _client(Toy(toy.url)) as client:
        submission = await client.submit(
            {"process": "convert", "file": source}, on_upload=counted.append
        )
    assert submission.job_id == "j1"
    assert toy.fields == {"process": "convert"}
    assert toy.uploads == {"model.step": PAYLOAD}
    assert sum(counted) == len(PAYLOAD)


async def test_an_unreadable_upload_is_a_configuration_error_naming_the_file(
    toy: ToyServer, tmp_path: Path
) -> None:
    from pollkit import ConfigurationError

    missing = tmp_path / "gone.step"
    async with _client(Toy(toy.url)) as client:
        with pytest.raises(ConfigurationError, match=r"gone\.step"):
            await client.submit({"process": "convert", "file": missing})
    assert ("POST", "/jobs") not in toy.requests


async def test_outputs_are_listed_once_and_downloaded_with_the_key(
    toy: ToyServer, tmp_path: Path
) -> None:
    async with _client(Toy(toy.url)) as client:
        result = await client.check_result("j1", download_directory=tmp_path)
    assert [p.name for p in result.downloaded_paths] == ["j1-0.bin", "j1-1.bin"]
    assert all(p.read_bytes() == PAYLOAD for p in result.downloaded_paths)
    assert toy.requests.count(("GET", "/jobs/j1/outputs")) == 1
    file_keys = [
        k for (_, path), k in zip(toy.requests, toy.keys, strict=True) if "/files/" in path
    ]
    assert file_keys == [KEY, KEY]


async def test_a_download_sent_with_the_key_never_follows_a_redirect(
    toy: ToyServer, tmp_path: Path
) -> None:
    async with _client(Toy(toy.url, files_under="/redirect")) as client:
        state = await client.get("j1")
        with pytest.raises(Exception, match="302"):
            await client.check_result("j1", download_directory=tmp_path)
    assert state.status is Status.COMPLETE
    assert ("GET", "/free/a.bin") not in toy.requests
    assert not list(tmp_path.iterdir())


async def test_425_is_waited_for_on_its_own_cadence_outside_the_retry_budget(
    toy: ToyServer, tmp_path: Path
) -> None:
    toy.too_early = 7  # more than the retry policy's 5 attempts
    policy = DownloadPolicy(not_ready=Cadence(initial=0.001, maximum=0.005, timeout=10))
    async with _client(Toy(toy.url), download=policy) as client:
        result = await client.check_result("j1", download_directory=tmp_path)
    assert toy.too_early == 0
    assert [p.read_bytes() for p in result.downloaded_paths] == [PAYLOAD, PAYLOAD]
    assert not list(tmp_path.glob("*.part"))


async def test_425_past_the_not_ready_deadline_raises_not_ready(
    toy: ToyServer, tmp_path: Path
) -> None:
    toy.too_early = 10_000
    policy = DownloadPolicy(not_ready=Cadence(initial=0.01, maximum=0.01, timeout=0.1))
    async with _client(Toy(toy.url), download=policy) as client:
        with pytest.raises(NotReady) as caught:
            await client.check_result("j1", download_directory=tmp_path)
    assert caught.value.status_code == 425
    assert not list(tmp_path.iterdir())  # no empty .part left behind


async def test_a_wait_that_runs_out_carries_the_providers_hint(toy: ToyServer) -> None:
    toy.status = "queued"
    async with _client(Toy(toy.url)) as client:
        with pytest.raises(PollTimeout, match="cannot tell a queued job") as caught:
            await client.wait("j1", timeout=0.05)
    assert caught.value.hint is not None
