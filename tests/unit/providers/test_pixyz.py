"""PiXYZ: status mapping, spec validation, request shapes and parsing (no simulator)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from pollkit import (
    ConfigurationError,
    InvalidRequest,
    ProtocolError,
    RetryPolicy,
    Status,
)
from pollkit.client._pixyz import PixyzClient
from pollkit.models import JobState
from pollkit.providers.base import Request, Response
from pollkit.providers.pixyz import Pixyz, parse_metrics
from pollkit.transport._errors import error_for_status
from tests.fakenet import aioresponses

KEY = "pixyz_secret_key_123"
BASE = "http://pixyz.test:8001"
NOW = datetime(2025, 7, 1, 9, tzinfo=timezone.utc)
JOB = "9d2f6c4a-1b3e-4c5d-8e7f-0a1b2c3d4e5f"
px = Pixyz(api_key=KEY, base_url=BASE + "/")


def reply(payload: Any, request: Request, status: int = 200) -> Response:
    return Response(
        status, {"Content-Type": "application/json"}, json.dumps(payload).encode(), request
    )


def job_reply(status: str, progress: int | None = None, error: str | None = None) -> Response:
    payload = {"uuid": JOB, "name": "n", "status": status, "progress": progress, "error": error}
    return reply(payload, px.status_requests(JOB, None)[0])


@pytest.mark.parametrize(
    ("native", "status"),
    [
        ("SENT", Status.QUEUED),
        ("PENDING", Status.QUEUED),
        ("RECEIVED", Status.QUEUED),
        ("RETRY", Status.QUEUED),
        ("REJECTED", Status.QUEUED),
        ("STARTED", Status.RENDERING),
        ("RUNNING", Status.RENDERING),
        ("SUCCESS", Status.COMPLETE),
        ("FAILURE", Status.ERROR),
        ("REVOKED", Status.CANCELED),
    ],
)
def test_status_mapping(native: str, status: Status) -> None:
    state = px.parse_state(job_reply(native), NOW, None)
    assert (state.status, state.native_status, state.job_id) == (status, native, JOB)


@pytest.mark.parametrize(("progress", "expected"), [(None, None), (0, 0.0), (42, 0.42), (100, 1.0)])
def test_progress_is_a_fraction(progress: int | None, expected: float | None) -> None:
    assert px.parse_state(job_reply("RUNNING", progress), NOW, None).progress == expected


def test_failure_carries_the_short_error_and_the_last_traceback_line() -> None:
    state = px.parse_state(job_reply("FAILURE", error="Task process timeout"), NOW, None)
    assert str(state.error) == "Task process timeout"
    traceback = "Traceback (most recent call last):\n  File x\nProcessError: Pixyz Internal error\n"
    assert str(px.parse_state(job_reply("FAILURE", error=traceback), NOW, None).error) == (
        "ProcessError: Pixyz Internal error"
    )


@pytest.mark.parametrize("native", ["UNKNOWN", "paused", "success"])  # case-sensitive
def test_unknown_status_is_non_terminal_and_logged_once(
    native: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Pixyz(api_key=KEY, base_url=BASE)
    running = provider.parse_state(job_reply("RUNNING"), NOW, None)
    with caplog.at_level(logging.WARNING, logger="pollkit.providers"):
        first = provider.parse_state(job_reply(native), NOW, running)
        again = provider.parse_state(job_reply(native), NOW, None)
    assert (first.status, first.native_status) == (Status.RENDERING, native)
    assert again.status is Status.QUEUED
    assert len([r for r in caplog.records if native in r.getMessage()]) == 1


def test_terminal_states_are_sticky() -> None:
    done = px.parse_state(job_reply("SUCCESS", 100), NOW, None)
    assert px.parse_state(job_reply("PENDING"), NOW, done) is done  # expired: still complete


def test_archive_mode_lists_the_archive_files_mode_asks_for_the_listing() -> None:
    archive = Pixyz(api_key=KEY, base_url=BASE, outputs="archive")
    state = archive.parse_state(job_reply("SUCCESS", 100), NOW, None)
    (output,) = state.outputs
    assert output.is_archive
    assert output.url == f"{BASE}/jobs/{JOB}/outputs/archive"
    assert output.name == f"{JOB}.zip"
    assert archive.outputs_request(state) is None
    files = px.parse_state(job_reply("SUCCESS", 100), NOW, None)
    request = px.outputs_request(files)
    assert request is not None
    assert request.url == f"{BASE}/jobs/{JOB}/outputs"
    listed = px.parse_outputs(reply({"outputs": ["iso.png", "../evil"]}, request), files)
    assert [(o.index, o.name, o.url) for o in listed.outputs] == [
        (0, "iso.png", f"{BASE}/jobs/{JOB}/outputs/iso.png"),
        (1, "../evil", f"{BASE}/jobs/{JOB}/outputs/..%2Fevil"),  # one segment: no dot-segment
    ]
    assert px.output_file(JOB, "sub/a b.png").url == f"{BASE}/jobs/{JOB}/outputs/sub/a%20b.png"
    assert px.output_file(JOB, "..").url is None


def test_download_headers_only_for_the_api_itself() -> None:
    assert px.download_headers(f"{BASE}/jobs/{JOB}/outputs/archive") == {"x-api-key": KEY}
    assert px.download_headers("http://cdn.test/file.png") == {}
    assert px.download_headers("https://pixyz.test:8001/jobs") == {}  # other scheme
    nested = Pixyz(api_key=KEY, base_url="http://h.test/pixyz")
    assert nested.download_headers("http://h.test/pixyz/jobs/x") == {"x-api-key": KEY}
    assert nested.download_headers("http://h.test/pixyzzz/x") == {}
    assert nested.download_headers("http://h.test/other") == {}


def test_timeout_hint_says_the_id_may_be_wrong_only_for_pending() -> None:
    pending = px.parse_state(job_reply("PENDING"), NOW, None)
    hint = px.timeout_hint(pending)
    assert hint is not None
    assert "may be wrong" in hint
    assert px.timeout_hint(None) == hint
    assert px.timeout_hint(px.parse_state(job_reply("RUNNING"), NOW, None)) is None


def test_batch_states_keep_asked_jobs_only_and_absent_ones_read_pending() -> None:
    other, queued = "11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    request = px.batch_status_request([JOB, queued])
    listing = {
        "jobs": [
            {"uuid": JOB, "name": None, "status": "RUNNING", "progress": 50, "error": None},
            {"uuid": other, "name": None, "status": "SUCCESS", "progress": None, "error": None},
        ]
    }
    states = px.parse_batch_states(reply(listing, request), NOW, {})
    assert set(states) == {JOB, queued}
    assert (states[JOB].status, states[JOB].progress) == (Status.RENDERING, 0.5)
    assert (states[queued].status, states[queued].native_status) == (Status.QUEUED, "PENDING")
    with pytest.raises(ProtocolError, match="no 'jobs' list"):
        px.parse_batch_states(reply({"nope": 1}, px.batch_status_request([JOB])), NOW, {})


def write(tmp_path: Path, name: str, data: bytes = b"data") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_submit_request_is_multipart_with_every_field(tmp_path: Path) -> None:
    spec = {
        "process": "custom",
        "file": write(tmp_path, "in.step", b"x" * 10),
        "script": write(tmp_path, "s.py", b"def main(): pass\n"),
        "params": {"w": 1},
        "name": "alias",
        "config": {"entrypoint": "main", "queue": None, "time_limit": 60},
    }
    request = px.submit_request(spec)
    assert (request.method, request.url, request.json_body) == ("POST", f"{BASE}/jobs", None)
    assert request.headers["x-api-key"] == KEY
    assert KEY not in repr(request)
    assert KEY not in repr(px)
    parts = {p.name: p for p in request.form or ()}
    assert list(parts) == ["process", "params", "config", "name", "file", "script"]
    assert parts["process"].value == "custom"
    assert json.loads(parts["params"].value or "") == {"w": 1}
    assert json.loads(parts["config"].value or "")["queue"] is None
    assert parts["script"].content_type == "text/plain"
    assert request.upload_bytes == 10 + 17
    plain = px.submit_request({"process": "api_test"})
    assert [(p.name, p.value) for p in plain.form or ()] == [
        ("process", "api_test"),
        ("params", "{}"),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1], "must be a mapping"),
        ({"process": "api_test", "colour": 1}, "unknown key 'colour'"),
        ({"process": ""}, "process: must name a process"),
        ({"process": "convert_file", "file": "/nonexistent/x.step"}, "file: no such file"),
        ({"process": "convert_file", "file": "."}, "file: no such file"),
        ({"process": "api_test", "params": '{"a": 1}'}, "params: must be an object, got str"),
        ({"process": "api_test", "params": [1]}, "params: must be an object"),
        ({"process": "api_test", "params": {"x": float("nan")}}, "params: not JSON"),
        ({"process": "api_test", "config": "x"}, "config: must be an object"),
        ({"process": "api_test", "name": 3}, "name: must be a string"),
        ({}, "script: required when process is 'custom'"),
        ({"process": "custom", "script": "/nonexistent.py"}, "script: no such file"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(spec: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        px.submit_request(spec)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.step")
    os.chmod(path, 0)
    with pytest.raises(ConfigurationError, match="file: cannot read"):
        px.submit_request({"process": "convert_file", "file": path})


def test_malformed_ids_are_refused_before_sending() -> None:
    for build in (px.details_request, px.outputs_list_request, px.task_meta_request):
        with pytest.raises(ConfigurationError, match="job id must be a uuid"):
            build("../jobs")
    with pytest.raises(ConfigurationError):
        px.status_requests("abc", None)


def test_400_envelope_keeps_the_servers_details() -> None:
    body = {"detail": {"code": 400, "message": "Bad Request", "details": "Invalid process 'x'"}}
    error = error_for_status(reply(body, px.submit_request({"process": "x"}), 400), [KEY])
    assert isinstance(error, InvalidRequest)
    assert str(error) == "submit x: HTTP 400: Bad Request: Invalid process 'x'"


def test_parse_metrics_reads_the_text_format() -> None:
    text = (
        "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n"
        'http_requests_total{handler="/jobs",method="GET",status="200"} 3\n'
        "process_start_time_seconds 1.7e9 1700000000\n"
    )
    samples = parse_metrics(text)
    assert samples["http_requests_total"] == [
        ({"handler": "/jobs", "method": "GET", "status": "200"}, 3.0)
    ]
    assert samples["process_start_time_seconds"] == [({}, 1.7e9)]
    with pytest.raises(ProtocolError, match="line 1"):
        parse_metrics("not a metric line at all {")


async def test_request_shapes_on_the_wire() -> None:
    """Every route: method, URL, and the key only where the API checks it."""
    provider = Pixyz(api_key=KEY, base_url=BASE)
    state = {"uuid": JOB, "name": None, "status": "SUCCESS", "progress": 100, "error": None}
    with aioresponses() as mock:
        mock.get(f"{BASE}/", body="Welcome to PiXYZ API v1.0.7!")
        mock.get(f"{BASE}/processes", payload={"processes": ["sleep"]})
        mock.get(f"{BASE}/processes/sleep", payload={"doc": "Process 'sleep' documentation:"})
        mock.get(f"{BASE}/jobs", payload={"jobs": [state]})
        mock.get(f"{BASE}/jobs/{JOB}", payload=state)
        mock.get(f"{BASE}/jobs/{JOB}/details", payload=state | {"steps": [], "result": {}})
        # Twice: the engine lists the outputs of a job it sees complete, then the test does.
        mock.get(f"{BASE}/jobs/{JOB}/outputs", payload={"outputs": ["a.png"]}, repeat=True)
        mock.get(f"{BASE}/backend/get_task_meta/{JOB}", payload={"status": "SUCCESS"})
        mock.post(f"{BASE}/dev/callback", payload=None)
        mock.get(f"{BASE}/metrics", body="up 1\n")
        async with PixyzClient(provider, retry=RetryPolicy(max_attempts=1)) as pixyz:
            assert await pixyz.welcome() == "Welcome to PiXYZ API v1.0.7!"
            assert await pixyz.processes() == ["sleep"]
            assert (await pixyz.process_doc("sleep")).startswith("Process 'sleep'")
            assert (await pixyz.jobs())[0]["uuid"] == JOB
            assert (await pixyz.get(JOB)).status is Status.COMPLETE
            assert (await pixyz.details(JOB)).raw["steps"] == []
            assert await pixyz.outputs(JOB) == ["a.png"]
            assert (await pixyz.task_meta(JOB))["status"] == "SUCCESS"
            await pixyz.callback({"k": "v"})
            assert await pixyz.metrics() == {"up": [({}, 1.0)]}
        sent = {(m, str(u)): calls[0].kwargs for (m, u), calls in mock.requests.items()}
    open_routes = {"/", "/processes", "/processes/sleep", "/dev/callback", "/metrics"}
    assert len(sent) == 10
    assert len(mock.requests[("GET", URL(f"{BASE}/jobs/{JOB}/outputs"))]) == 2
    for (method, url), kwargs in sent.items():
        path = url.removeprefix(BASE)
        assert ("x-api-key" in kwargs["headers"]) is (path not in open_routes), (method, path)
        if "x-api-key" in kwargs["headers"]:
            assert kwargs["headers"]["x-api-key"] == KEY
    assert sent[("POST", f"{BASE}/dev/callback")]["json"] == {"k": "v"}


def test_pixyz_client_needs_a_pixyz_provider() -> None:
    from pollkit import MagicHour

    with pytest.raises(ConfigurationError, match="Pixyz provider"):
        PixyzClient(MagicHour(api_key="k"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_key": " "}, "no API key"),
        ({"api_key": "k", "base_url": "ftp://x"}, "must be http"),
        ({"api_key": "k", "outputs": "zip"}, "outputs must be"),
    ],
)
def test_bad_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Pixyz(**kwargs)


def test_parse_submission_needs_a_uuid() -> None:
    request = px.submit_request({"process": "api_test"})
    created = {"uuid": JOB, "name": None, "status": "SENT", "progress": None, "error": None}
    submission = px.parse_submission(reply(created, request), NOW)
    assert (submission.job_id, submission.raw["status"]) == (JOB, "SENT")
    with pytest.raises(ProtocolError, match="no job uuid"):
        px.parse_submission(reply({"uuid": "x"}, request), NOW)
    assert isinstance(px.parse_state(job_reply("SENT"), NOW, None), JobState)


def test_a_batch_request_carries_the_jobs_it_reads_not_the_provider() -> None:
    queued = "00000000-0000-4000-8000-00000000beef"
    request = px.batch_status_request([JOB, queued])
    assert request.job_ids == frozenset({JOB, queued})
    # Another provider object parses the reply the same way: nothing was kept aside.
    twin = px.with_base_url("https://other.pixyz.test")
    assert set(twin.parse_batch_states(reply({"jobs": []}, request), NOW, {})) == {JOB, queued}
