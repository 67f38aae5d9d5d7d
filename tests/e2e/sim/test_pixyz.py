"""The PiXYZ Scheduler dialect: docs/apis/pixyz.md, quirks included, over real sockets.

The clock barely moves on its own (`time_scale=1e-6`): each test moves it with
`sim.clock.advance`, so every phase it observes is the one it asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pollkit.sim import Scenario, Simulator
from tests.e2e.sim.helpers import parse_png

KEY = "pixyz_test_key"
# Queued 10 s, then STARTED 10 s, then three steps of 30 s (convert_file): done at 110 s.
SLOW = Scenario(seed=3, time_scale=1e-6, queue_delay=10.0, render_time=100.0, archive_delay=5.0)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NAIVE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
AWARE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
SCRIPT = "def main(**params):\n    return params\n"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SLOW, api_key=KEY) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"x-api-key": KEY}) as session:
        yield session


def url(sim: Simulator, path: str) -> str:
    return f"{sim.urls['pixyz']}{path}"


def form(**fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, content = value
            data.add_field(name, content, filename=filename)
        else:
            data.add_field(name, value if isinstance(value, str) else json.dumps(value))
    return data


async def post_job(http: aiohttp.ClientSession, sim: Simulator, **fields: Any) -> dict[str, Any]:
    async with http.post(url(sim, "/jobs"), data=form(**fields)) as reply:
        assert reply.status == 200, await reply.text()
        body: dict[str, Any] = await reply.json()
    return body


async def get(http: aiohttp.ClientSession, sim: Simulator, path: str) -> tuple[int, Any]:
    async with http.get(url(sim, path)) as reply:
        if reply.content_type == "application/json":
            return reply.status, await reply.json()
        return reply.status, await reply.read()


async def convert(http: aiohttp.ClientSession, sim: Simulator, **extra: Any) -> str:
    body = await post_job(
        http,
        sim,
        process="convert_file",
        params={"extension": "GLB"},
        file=("b.step", b"x" * 64),
        **extra,
    )
    return str(body["uuid"])


async def test_unauthenticated_routes(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(url(sim, "/")) as reply:
            assert (reply.status, await reply.text()) == (200, "Welcome to PiXYZ API v1.0.7!")
            assert reply.content_type == "text/plain"
        async with anonymous.get(url(sim, "/processes")) as reply:
            names = (await reply.json())["processes"]
        assert names[0] == "__init__"
        assert {"api_test", "sleep", "convert_file", "generate_thumbnails"} <= set(names)
        async with anonymous.get(url(sim, "/processes/sleep")) as reply:
            doc = (await reply.json())["doc"]
        assert doc.startswith("Process 'sleep' documentation:\n\n")
        async with anonymous.get(url(sim, "/processes/nope")) as reply:
            assert reply.status == 400
            assert (await reply.json())["detail"]["details"] == "Invalid process 'nope'"
        async with anonymous.get(url(sim, "/processes/__init__")) as reply:
            assert reply.status == 500  # no docstring: the inner 404 wrapped in a 500
            assert (await reply.json())["detail"]["details"].startswith("HTTPException: 404: ")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/not-a-uuid"),  # 401 before path validation
        ("GET", f"/jobs/{uuid.uuid4()}/details"),
        ("GET", f"/jobs/{uuid.uuid4()}/outputs"),
        ("GET", f"/jobs/{uuid.uuid4()}/outputs/archive"),
        ("GET", f"/jobs/{uuid.uuid4()}/outputs/a/b.png"),
        ("GET", f"/backend/get_task_meta/{uuid.uuid4()}"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong"])
async def test_401_plain_before_anything_else(
    sim: Simulator, method: str, path: str, key: str | None
) -> None:
    headers = {"x-api-key": key} if key else {}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.request(method, url(sim, path)) as reply,
    ):
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == "x-api-key"
        assert await reply.json() == {"detail": "Invalid token"}


@pytest.mark.parametrize("path", ["/jobs/abc", "/jobs/abc/details", "/jobs/abc/outputs"])
async def test_malformed_uuid_is_a_400_envelope_never_422(
    http: aiohttp.ClientSession, sim: Simulator, path: str
) -> None:
    status, body = await get(http, sim, path)
    assert status == 400
    assert body["detail"]["code"] == 400
    assert body["detail"]["message"] == "Bad Request"
    assert "job_uuid" in body["detail"]["details"]


@pytest.mark.parametrize(
    ("fields", "details"),
    [
        ({"process": "api_test", "params": "{bad"}, "JSONDecodeError: Invalid JSON in params"),
        ({"process": "api_test", "config": "[1,"}, "JSONDecodeError: Invalid JSON in config"),
        ({"process": "api_test", "params": '"text"'}, "ValueError: params must be a JSON object"),
        ({"process": "nope"}, "Invalid process 'nope'"),
        ({"process": "__init__"}, "Invalid process '__init__'"),
        ({"process": "custom"}, "ValueError: a script is required for the custom process"),
        ({"process": ""}, "ValueError: a script is required"),  # empty = absent = custom
        ({"params": "{}"}, "ValueError: a script is required"),  # process defaults to custom
        ({"script": ("s.py", b"def other():\n    pass\n")}, "ValueError: entry point 'main'"),
        (
            {"script": ("s.py", SCRIPT.encode()), "config": {"entrypoint": "run"}},
            "ValueError: entry point 'run' not found",
        ),
    ],
)
async def test_form_rules_give_400_with_specific_details(
    http: aiohttp.ClientSession, sim: Simulator, fields: dict[str, Any], details: str
) -> None:
    async with http.post(url(sim, "/jobs"), data=form(**fields)) as reply:
        assert reply.status == 400
        body = await reply.json()
    assert body["detail"]["message"] == "Bad Request"
    assert body["detail"]["details"].startswith(details)
    assert sim.stats()["jobs"] == []


async def test_custom_entry_point_null_config_and_immutable_keys(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    script = ("s.py", b"def run(**p):\n    return p\n")
    config = {"entrypoint": "run", "uuid": "00000000-0000-4000-8000-000000000000", "queue": None}
    created = await post_job(http, sim, script=script, config=config, name="")
    assert created["uuid"] != config["uuid"]  # the server picks the uuid; that key is ignored
    assert created["name"] is None  # empty = absent
    # A null entry point is dropped: the default `main` applies.
    await post_job(http, sim, script=("s.py", SCRIPT.encode()), config={"entrypoint": None})


async def test_lifecycle_pending_started_running_success(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    created = await post_job(
        http, sim, process="convert_file", params={"extension": "GLB"}, name="bracket",
        file=("b.step", b"x" * 64),
    )  # fmt: skip
    assert UUID.match(created["uuid"])
    assert created == {
        "uuid": created["uuid"], "name": "bracket", "status": "SENT",
        "progress": None, "error": None,
    }  # fmt: skip
    job = created["uuid"]
    seen = []
    for advance in (0.0, 11.0, 10.0, 30.0, 60.0):  # t = 0, 11, 21, 51, 111
        sim.clock.advance(advance)
        _, short = await get(http, sim, f"/jobs/{job}")
        _, details = await get(http, sim, f"/jobs/{job}/details")
        assert set(short) == {"uuid", "name", "status", "progress", "error"}
        assert {k: details[k] for k in short} == short
        seen.append(details)
    pending, started, first, second, success = seen
    assert pending["status"] == "PENDING"
    assert (pending["name"], pending["progress"], pending["steps"]) == (None, None, None)
    assert pending["result"] == "None"
    assert pending["time_info"] == {"request": None, "started": None, "stopped": None}
    assert (started["status"], started["steps"], started["result"], started["name"]) == (
        "STARTED", [], {}, None,
    )  # fmt: skip
    assert (first["status"], first["progress"], first["name"]) == ("RUNNING", 0, "bracket")
    assert first["steps"] == [{"duration": -1, "info": "Importing file b.step"}]
    assert NAIVE.match(first["time_info"]["request"])
    assert AWARE.match(first["time_info"]["started"])
    assert first["time_info"]["stopped"] is None
    assert second["progress"] == 33  # floor(100 × 1/3)
    assert [s["duration"] for s in second["steps"]] == [30.0, -1]
    assert success["status"] == "SUCCESS"
    assert success["progress"] == 100
    assert success["result"] == {"output": "output.glb"}
    assert [s["info"] for s in success["steps"]] == [
        "Importing file b.step", "Exporting file to output.glb", "done",
    ]  # fmt: skip
    assert all(s["duration"] >= 0 for s in success["steps"])
    assert AWARE.match(success["time_info"]["stopped"])
    assert success["retry"] == 0


async def test_unknown_uuid_reads_pending_never_404(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    unknown = str(uuid.uuid4())
    assert await get(http, sim, f"/jobs/{unknown}") == (
        200, {"uuid": unknown, "name": None, "status": "PENDING", "progress": None, "error": None},
    )  # fmt: skip
    status, details = await get(http, sim, f"/jobs/{unknown}/details")
    assert (status, details["status"], details["result"], details["steps"]) == (
        200, "PENDING", "None", None,
    )  # fmt: skip
    _, meta = await get(http, sim, f"/backend/get_task_meta/{unknown}")
    assert meta == {
        "status": "PENDING", "result": None, "traceback": None, "children": [],
        "parent_id": None, "task_id": None, "date_done": None,
    }  # fmt: skip


async def test_failure_short_error_on_status_traceback_on_details(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.plan_next("error")
    job = await convert(http, sim)
    sim.clock.advance(200)
    _, short = await get(http, sim, f"/jobs/{job}")
    assert short["status"] == "FAILURE"
    assert short["progress"] is None
    assert short["error"] == "Task process exited with error"
    _, details = await get(http, sim, f"/jobs/{job}/details")
    assert details["error"].startswith("Traceback (most recent call last):")
    assert details["error"].rstrip().endswith("Task process exited with error")
    assert details["steps"] is None
    assert isinstance(details["result"], str)
    times = details["time_info"]
    assert (times["request"], times["started"]) == (None, None)
    assert AWARE.match(times["stopped"])
    _, meta = await get(http, sim, f"/backend/get_task_meta/{job}")
    assert meta["status"] == "FAILURE"
    assert meta["traceback"].startswith("Traceback")


async def test_revoked_by_plan_and_by_cancel_draft_stays_pending(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.plan_next("canceled")
    planned = await convert(http, sim)
    canceled = await convert(http, sim)
    sim.plan_next("draft")
    draft = await convert(http, sim)
    sim.clock.advance(20)
    async with http.post(f"{sim.url}/_sim/jobs/{canceled}/cancel") as reply:
        assert (await reply.json())["status"] == "canceled"
    sim.clock.advance(1e6)
    for job, status in ((planned, "REVOKED"), (canceled, "REVOKED"), (draft, "PENDING")):
        _, body = await get(http, sim, f"/jobs/{job}")
        assert (body["status"], body["progress"]) == (status, None)


async def test_api_test_and_sleep_results_are_exact(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    echo = await post_job(http, sim, process="api_test", params={"a": [1, 2]})
    nap = await post_job(http, sim, process="sleep", params={"duration": 2.5})
    default_nap = await post_job(http, sim, process="sleep")
    sim.clock.advance(200)
    _, body = await get(http, sim, f"/jobs/{echo['uuid']}/details")
    assert body["result"] == {"output": "Hello World!", "params": {"a": [1, 2]}}
    assert [s["info"] for s in body["steps"]] == ["API tested successfully!"]
    _, body = await get(http, sim, f"/jobs/{nap['uuid']}/details")
    assert body["result"] == {"sleep": 2.5}
    assert body["steps"][0]["info"] == "Sleeping for 2.5 seconds"
    _, body = await get(http, sim, f"/jobs/{default_nap['uuid']}/details")
    assert body["result"] == {"sleep": 0.1}


async def test_thumbnails_are_real_pngs_with_metadata_and_stats_digests(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    created = await post_job(
        http, sim, process="generate_thumbnails", params={"width": 12, "height": 7},
        file=("part.step", b"y" * 100),
    )  # fmt: skip
    job = created["uuid"]
    assert await get(http, sim, f"/jobs/{job}/outputs") == (200, {"outputs": []})
    sim.clock.advance(200)
    _, details = await get(http, sim, f"/jobs/{job}/details")
    result = details["result"]
    assert result["thumbs"] == {"iso": "iso.png", "x": "x.png", "y": "y.png", "z": "z.png"}
    assert result["preview"] == {"file": "preview.glb", "size": "12x7"}
    assert len(details["steps"]) == 12
    metadata = result["metadata"]
    assert len(metadata) == 16
    assert isinstance(metadata["aabb"], str)
    assert all(isinstance(v, int) for k, v in metadata.items() if k != "aabb")
    _, listing = await get(http, sim, f"/jobs/{job}/outputs")
    names = ["iso.png", "x.png", "y.png", "z.png", "preview.glb", "metadata.json"]
    assert listing == {"outputs": names}
    published = {o["name"]: o["sha256"] for o in sim.stats()["jobs"][0]["outputs"]}
    for name in names:
        async with http.get(url(sim, f"/jobs/{job}/outputs/{name}")) as reply:
            data = await reply.read()
            assert reply.headers["Content-Length"] == str(len(data))
            assert reply.headers["Content-Disposition"] == f'attachment; filename="{name}"'
            assert reply.content_type == "application/octet-stream"
        assert published[name] == hashlib.sha256(data).hexdigest()
        if name.endswith(".png"):
            assert parse_png(data)[:2] == (12, 7)
        elif name == "preview.glb":
            assert data[:4] == b"glTF"
        else:
            assert json.loads(data) == result["metadata"]


async def test_single_file_404_and_400_for_escaping_paths(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    job = await convert(http, sim)
    sim.clock.advance(200)
    status, body = await get(http, sim, f"/jobs/{job}/outputs/missing.bin")
    assert status == 404
    assert (
        body["detail"]["details"] == "SharePathNotFoundError: File 'outputs/missing.bin' not found"
    )
    status, body = await get(http, sim, f"/jobs/{job}/outputs/..%2F..%2Fetc%2Fpasswd")
    assert status == 400
    assert "outside the job directory" in body["detail"]["details"]
    status, data = await get(http, sim, f"/jobs/{job}/outputs/output.glb")
    assert (status, data[:4]) == (200, b"glTF")


async def test_archive_state_machine(http: aiohttp.ClientSession, sim: Simulator) -> None:
    never = str(uuid.uuid4())
    status, body = await get(http, sim, f"/jobs/{never}/outputs/archive")
    assert status == 404
    assert body["detail"]["details"] == f"SharePathNotFoundError: Job '{never}' does not exist"
    # Listing outputs of an unknown uuid creates its directory: 404 becomes 425 forever.
    assert await get(http, sim, f"/jobs/{never}/outputs") == (200, {"outputs": []})
    status, body = await get(http, sim, f"/jobs/{never}/outputs/archive")
    assert (status, body["detail"]["message"]) == (425, "Too early")
    job = await convert(http, sim)
    status, body = await get(http, sim, f"/jobs/{job}/outputs/archive")
    assert status == 425
    assert body["detail"] == {
        "code": 425, "message": "Too early",
        "details": f"TaskNotCompletedError: Job '{job}' is not finished yet",
    }  # fmt: skip
    sim.clock.advance(200)
    status, body = await get(http, sim, f"/jobs/{job}/outputs/archive")
    started = re.match(
        rf"^TaskProcessingStarted: Archive Task '([0-9a-f-]{{36}})' created for job '{job}'",
        body["detail"]["details"],
    )
    assert body["detail"]["details"].endswith(" outputs")
    assert status == 425
    assert started is not None
    _, listed = await get(http, sim, "/jobs")
    assert started.group(1) in {j["uuid"] for j in listed["jobs"]}  # internal packaging task
    status, body = await get(http, sim, f"/jobs/{job}/outputs/archive")
    assert status == 425
    assert body["detail"]["details"] == (
        f"TaskNotCompletedError: Archive task for job '{job}' is already running"
    )
    sim.clock.advance(5)  # the scenario's archive_delay
    async with http.get(url(sim, f"/jobs/{job}/outputs/archive")) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Disposition"] == f'attachment; filename="{job}.zip"'
        first = await reply.read()
        assert reply.headers["Content-Length"] == str(len(first))
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["output.glb"]
    status, again = await get(http, sim, f"/jobs/{job}/outputs/archive")
    assert (status, again) == (200, first)  # cached, never rebuilt


async def test_failure_jobs_get_archives_too(http: aiohttp.ClientSession, sim: Simulator) -> None:
    sim.plan_next("error")
    job = await convert(http, sim)
    sim.clock.advance(200)
    assert (await get(http, sim, f"/jobs/{job}/outputs/archive"))[0] == 425
    sim.clock.advance(10)
    status, data = await get(http, sim, f"/jobs/{job}/outputs/archive")
    assert status == 200
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == []


async def test_job_list_skips_queued_jobs(http: aiohttp.ClientSession, sim: Simulator) -> None:
    queued = await convert(http, sim)
    assert await get(http, sim, "/jobs") == (200, {"jobs": []})
    sim.clock.advance(50)
    _, listed = await get(http, sim, "/jobs")
    assert [(j["uuid"], j["status"]) for j in listed["jobs"]] == [(queued, "RUNNING")]


async def test_scripted_custom_jobs(http: aiohttp.ClientSession, sim: Simulator) -> None:
    def script(marker: str) -> tuple[str, bytes]:
        return ("job.py", f"# pollkit-sim: {marker}\n{SCRIPT}".encode())

    stuck = await post_job(http, sim, script=script("stuck=RETRY queue=0"))
    revoked = await post_job(http, sim, script=script("outcome=revoked render=1"))
    hostile = await post_job(http, sim, script=script("outputs=../evil,ok.txt"), params={"k": 1})
    sim.clock.advance(1000)
    assert (await get(http, sim, f"/jobs/{stuck['uuid']}"))[1]["status"] == "RETRY"
    assert (await get(http, sim, f"/jobs/{revoked['uuid']}"))[1]["status"] == "REVOKED"
    _, details = await get(http, sim, f"/jobs/{hostile['uuid']}/details")
    assert details["result"] == {
        "entrypoint": "main",
        "params": {"k": 1},
        "outputs": ["../evil", "ok.txt"],
    }
    _, listing = await get(http, sim, f"/jobs/{hostile['uuid']}/outputs")
    assert listing == {"outputs": ["../evil", "ok.txt"]}


async def test_dev_callback_logs_at_debug_and_answers_null(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pollkit.sim.pixyz")
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(url(sim, "/dev/callback"), json={"event": "done"}) as reply:
            assert (reply.status, await reply.json()) == (200, None)
        async with anonymous.post(url(sim, "/dev/callback"), json=[1]) as reply:
            assert reply.status == 400
    assert any("'event': 'done'" in r.getMessage() for r in caplog.records)


async def test_metrics_count_what_was_served(http: aiohttp.ClientSession, sim: Simulator) -> None:
    job = await convert(http, sim)
    await get(http, sim, "/jobs/abc")
    sim.clock.advance(200)
    _, data = await get(http, sim, f"/jobs/{job}/outputs/output.glb")
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(url(sim, "/metrics"), headers={"Accept-Encoding": "gzip"}) as reply,
    ):
        assert reply.headers["Content-Encoding"] == "gzip"
        assert reply.content_type == "text/plain"
        text = await reply.text()
    assert "# TYPE http_requests_total counter" in text
    assert 'http_requests_total{handler="/jobs",method="POST",status="200"} 1' in text
    assert 'http_requests_total{handler="/jobs/{job_uuid}",method="GET",status="400"} 1' in text
    assert f'http_response_bytes_total{{kind="file"}} {len(data)}' in text
    assert 'pixyz_jobs{status="SUCCESS"} 1' in text
