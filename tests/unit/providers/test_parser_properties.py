"""Every provider parser maps any reply to a typed value or a `ProtocolError` (hypothesis).

For each parse hook of Magic Hour, Pixy, PiXYZ (both outputs modes) and flux0, replies are
built from arbitrary JSON, from recorded replies with fields deleted or replaced, and from bytes
that are not JSON. Whatever the reply, the hook returns a well-formed value (a `JobState` of the
job it was asked about, with a `Status`, safe outputs, sticky terminals and, for Pixy, progress
that never falls) or raises `ProtocolError` naming the operation. Any other exception is a bug.
An unknown status string is never terminal (docs/apis/index.md#unknown-statuses).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pollkit.core.jsonbody import MAX_DEPTH
from pollkit.core.naming import safe_name
from pollkit.errors import ProtocolError
from pollkit.models import ErrorInfo, JobState, Output, Status
from pollkit.providers.base import Provider, Request, Response, Submission
from pollkit.providers.flux0 import STATUSES as FLUX0_STATUSES
from pollkit.providers.flux0 import Flux0, RunTracker
from pollkit.providers.magichour import MagicHour
from pollkit.providers.pixy import Pixy, PixyPage
from pollkit.providers.pixy_items import BY_STATUS, BY_TASK_STATUS
from pollkit.providers.pixyz import STATUSES as PIXYZ_STATUSES
from pollkit.providers.pixyz import Pixyz, parse_metrics

NOW = datetime(2025, 7, 1, 9, tzinfo=timezone.utc)
UID = "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10"
JOB = "9d2f6c4a-1b3e-4c5d-8e7f-0a1b2c3d4e5f"
SID, CID = "a1B2c3D4e5", "RID(x1x2x3x4x5)::Zz9Yy8Xx7W"
RUN = f"{SID}/{CID}"

# Reproducible in CI: a fixed seed and no example database; no deadline on shared runners.
FEW = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MANY = settings(FEW, max_examples=300)

# -- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KNOWN_NATIVES = sorted(
    {s.value for s in Status}
    | set(BY_STATUS)
    | set(BY_TASK_STATUS)
    | set(PIXYZ_STATUSES)
    | set(FLUX0_STATUSES)
)
status_strings = st.sampled_from(KNOWN_NATIVES) | st.text(max_size=12)
# Datetimes the way APIs write them, with any offset (year 1 and 9999 included).
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
    lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
)
iso_times = st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat)
content_types = st.sampled_from(
    ["application/json", "text/html; charset=utf-8", "text/plain", "application/octet-stream"]
)
NOT_JSON = [
    b"",
    b"<html><body>502 Bad Gateway</body></html>",
    b"\xff\xfe\xfa",  # not UTF-8
    b'{"id": "p1", "status": "comp',  # cut short
    b"[" * 2_000 + b"]" * 2_000,  # deeper than the decoder's recursion limit
    b"1" * 5_000,  # more digits than int() takes
    b'{"task_progress": ' + b"9" * 4_400 + b"}",
]
bodies = st.sampled_from(NOT_JSON) | st.binary(max_size=64) | st.text(max_size=40).map(str.encode)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


@st.composite
def nearly(draw: st.DrawFn, valid: Any) -> Any:
    """`valid` with one to three fields deleted, or replaced by any JSON, a status-like string
    or a timestamp."""
    reply = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(reply))
        if not paths:
            break
        *parents, key = draw(st.sampled_from(paths))
        parent = reply
        for step in parents:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "json", "string", "time"]))
        if action == "delete":
            del parent[key]
        else:
            strategy = {"json": json_values, "string": status_strings, "time": iso_times}[action]
            parent[key] = draw(strategy)
    return reply


def replies(valid: list[Any]) -> st.SearchStrategy[Any]:
    """A recorded reply as it is, nearly valid, or any JSON at all."""
    shapes = st.sampled_from(valid)
    return shapes | shapes.flatmap(nearly) | json_values


def reply(request: Request, payload: Any, ctype: str = "application/json") -> Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Response(200, {"Content-Type": ctype}, body, request)


def _with_reason(state: JobState) -> JobState:
    if state.status is not Status.ERROR:
        return state
    return replace(state, error=ErrorInfo("earlier", "it failed before"))


def previous_states(provider: str, job_id: str, kind: str | None) -> st.SearchStrategy[Any]:
    return st.none() | st.builds(
        JobState,
        provider=st.just(provider),
        job_id=st.just(job_id),
        status=st.sampled_from(Status),
        native_status=st.just("earlier"),
        observed_at=st.sampled_from([NOW - timedelta(seconds=10), NOW, NOW + timedelta(1)]),
        progress=st.none() | st.floats(0, 1),
        eta_seconds=st.none() | st.floats(0, 1e6),
        kind=st.just(kind),
    ).map(_with_reason)


# -- what a well-formed value is ---------------------------------------------------------------


def check_error(exc: ProtocolError) -> None:
    assert exc.operation, "a protocol error names the operation"
    assert "\n" not in str(exc)


def call(parse: Callable[[], Any]) -> Any:
    """What `parse` returns, or None when it raised a well-formed `ProtocolError` (any other
    exception fails the property)."""
    try:
        return parse()
    except ProtocolError as exc:
        check_error(exc)
        return None


def check_outputs(state: JobState, *, url_names: bool) -> None:
    assert isinstance(state.outputs, tuple)
    if state.outputs:
        assert state.status is Status.COMPLETE
    for index, output in enumerate(state.outputs):
        assert isinstance(output, Output)
        assert output.index == index
        if output.url is not None:
            assert isinstance(output.url, str)
            assert output.url
            urlsplit(output.url)  # the downloader can read it
        if output.name is not None:
            assert isinstance(output.name, str)
            assert output.name
            if url_names:  # a name taken from a URL is a plain file name
                assert safe_name(output.name), output.name
        if output.expires_at is not None:
            assert output.expires_at.tzinfo is not None, "compared with an aware now()"


def check_state(
    provider: Provider,
    state: Any,
    asked: str | None,
    previous: JobState | None,
    *,
    url_names: bool = True,
) -> None:
    assert isinstance(state, JobState)
    assert state.provider == provider.name
    assert isinstance(state.status, Status)
    assert isinstance(state.native_status, str)
    assert isinstance(state.job_id, str)
    assert state.job_id
    if asked is not None:  # the job it was asked about (uuids in any case)
        assert state.job_id.lower() == asked.lower()
    assert isinstance(state.raw, Mapping)
    if state.progress is not None:
        assert 0 <= state.progress <= 1
    if state.eta_seconds is not None:
        assert math.isfinite(state.eta_seconds)
        assert state.eta_seconds >= 0
    if state.status is Status.ERROR:
        assert isinstance(state.error, ErrorInfo)
    if state.error is not None:
        assert isinstance(state.error.message, str)
        assert state.error.code is None or isinstance(state.error.code, str)
    if previous is not None and previous.is_terminal:  # rule 3 (and Pixy's one exception)
        pixy_cancel = previous.status is Status.COMPLETE and state.status is Status.CANCELED
        assert state.status is previous.status or (provider.name == "pixy" and pixy_cancel)
    check_outputs(state, url_names=url_names)


def check_submission(provider: Provider, submission: Any) -> None:
    assert isinstance(submission, Submission)
    assert isinstance(submission.job_id, str)
    assert submission.job_id
    assert submission.submitted_at == NOW
    assert isinstance(submission.raw, Mapping)
    provider.status_requests(submission.job_id, submission.kind)  # the id can be polled


# -- Magic Hour -------------------------------------------------------------------------------

mh = MagicHour(api_key="mhk_secret", base_url="http://mh.test")


def mh_project(status: str, **overrides: Any) -> dict[str, Any]:
    project = {
        "id": "p1", "name": "harbour", "status": status, "type": "AI_IMAGE", "image_count": 2,
        "created_at": "2025-06-03T10:15:00.000Z", "enabled": True, "credits_charged": 10,
        "total_frame_cost": 10, "downloads": [], "error": None,
    }  # fmt: skip
    return project | overrides


def _mh_download(name: str) -> dict[str, Any]:
    url = f"http://cdn.test/p1/{name}?sig=s1"
    return {"url": url, "expires_at": "2025-06-04T10:15:00.000Z"}


MH_PROJECTS = [
    mh_project("complete", downloads=[_mh_download("output-0.png"), _mh_download("o 1.png")]),
    mh_project("complete", type="TEXT_TO_VIDEO", download=_mh_download("output.mp4")),
    mh_project("error", error={"code": "render_failed", "message": "The render failed"}),
    mh_project("rendering"),
    mh_project("queued", enabled=False),
]
mh_status_requests = st.sampled_from(["image", "video", "audio"]).map(
    lambda kind: mh.status_requests("p1", kind)[0]
)
mh_previous = previous_states("magichour", "p1", "image")


@MANY
@given(mh_status_requests, replies(MH_PROJECTS), mh_previous)
@example(
    mh.status_requests("p1", "image")[0],
    mh_project("complete", downloads=[{"url": "http://[cdn.test/a.png", "expires_at": None}]),
    None,
)
@example(
    mh.status_requests("p1", "image")[0],
    mh_project("complete", downloads=[{"url": "http://c/a.png", "expires_at": "2025-06-04T10:15"}]),
    None,
)
@example(mh.status_requests("p1", "image")[0], mh_project("rendering", id="p2"), None)
@example(
    mh.status_requests("p1", "image")[0],
    mh_project("rendering"),
    JobState("magichour", "p1", Status.COMPLETE, "complete", NOW),
)
def test_magichour_parse_state(request: Request, payload: Any, previous: JobState | None) -> None:
    state = call(lambda: mh.parse_state(reply(request, payload), NOW, previous))
    if state is not None:
        check_state(mh, state, request.job_id, previous)


mh_submit = mh.submit_request(
    {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "x"}}
)


@FEW
@given(replies([{"id": "p1", "credits_charged": 10, "frame_cost": 10}]))
@example({"id": "a/b"})
@example({"id": " p1"})
def test_magichour_parse_submission(payload: Any) -> None:
    submission = call(lambda: mh.parse_submission(reply(mh_submit, payload), NOW))
    if submission is not None:
        check_submission(mh, submission)
        assert submission.kind == "image"


# -- Pixy --------------------------------------------------------------------------------------


def pixy_item(status: str | None, task_status: str, **overrides: Any) -> dict[str, Any]:
    """An item in the recorded shape of docs/apis/pixy.md#item-shape (no `status`: a video item)."""
    item: dict[str, Any] = {
        "created_at": "2025-05-10T08:00:00.120000", "updated_at": "2025-05-10T08:00:07.480000",
        "is_deleted": False, "meta_data": None, "uid": UID, "task_status": task_status,
        "task_report": "photon_flash has been requested.", "task_progress": 50,
        "task_logs": [{"reported_at": "2025-05-10T08:00:07.480000", "message": "requested",
                       "task_status": "processing", "duration": 7, "log_type": "report"}],
        "engine": "photon_flash", "error": None, "results": None,
    }  # fmt: skip
    if status is not None:
        item |= {"status": status, "aspect_ratio": "1:1", "delineation": "a red kite"}
    return item | overrides


def _pixy_results(count: int) -> list[dict[str, Any]]:
    return [
        {"url": f"https://cdn.pixy.test/files/{UID}-{i}.png", "width": 1024, "height": 1024}
        for i in range(count)
    ]


PIXY_ITEMS = [
    pixy_item("init", "init", task_progress=-1),
    pixy_item("running", "processing", task_progress=60),
    pixy_item("completed", "completed", task_progress=100, results=_pixy_results(2)),
    pixy_item("error", "error", error="quota exceeded"),
    pixy_item("cancelled", "completed"),
    pixy_item("running", "processing", is_deleted=True),
    pixy_item(None, "processing", task_progress=10),
    pixy_item(None, "done", results=_pixy_results(1)),
]


def pixy() -> Pixy:
    return Pixy(api_key="pk_secret", base_url="http://pixy.test")


px = pixy()
px_status_requests = st.sampled_from(["image", "video", "subtitle"]).map(
    lambda kind: px.status_requests(UID, kind)[0]
)
px_previous = previous_states("pixy", UID, "image")


@MANY
@given(px_status_requests, replies(PIXY_ITEMS), px_previous)
@example(px.status_requests(UID, "image")[0], pixy_item("running", "processing"), None)
@example(
    px.status_requests(UID, "image")[0],
    pixy_item("running", "processing", task_progress=10**400),
    None,
)
@example(
    px.status_requests(UID, "image")[0],
    pixy_item("init", "init", created_at="0001-01-01T00:00:00+01:00"),
    None,
)
@example(
    px.status_requests(UID, "image")[0],
    pixy_item("completed", "completed", results=[{"url": "http://[cdn/a.png"}, {"url": "h/%2E."}]),
    None,
)
@example(
    px.status_requests(UID, "image")[0],
    pixy_item("running", "processing", uid="7e8d9c0b-1a2f-4e3d-8c7b-6a5f4e3d2c1b"),
    None,
)
def test_pixy_parse_state(request: Request, payload: Any, previous: JobState | None) -> None:
    state = call(lambda: pixy().parse_state(reply(request, payload), NOW, previous))
    if state is not None:
        check_state(px, state, request.job_id, previous)
        if previous is not None and previous.progress is not None:
            assert state.progress is not None
            assert state.progress >= previous.progress  # progress never falls


px_submit = px.submit_request({"type": "image", "engine": "dalle", "delineation": "x"})


@FEW
@given(replies([pixy_item("init", "init")]))
@example(pixy_item("init", "init", uid="not-a-uuid"))
@example(pixy_item("init", "init", created_at="9999-12-31T23:59:59-01:00"))
def test_pixy_parse_submission(payload: Any) -> None:
    submission = call(lambda: pixy().parse_submission(reply(px_submit, payload), NOW))
    if submission is not None:
        check_submission(px, submission)
        assert submission.kind == "image"


def _page(*items: Any) -> dict[str, Any]:
    return {"items": list(items), "total": len(items), "offset": 0, "limit": 100}


PIXY_PAGES = [
    _page(*PIXY_ITEMS[:3]),
    _page(pixy_item("running", "processing", uid="99999999-2222-4333-8444-555555555555")),
    _page(),
]


@FEW
@given(replies(PIXY_PAGES), px_previous)
def test_pixy_parse_batch_states(payload: Any, previous: JobState | None) -> None:
    provider = pixy()
    provider.parse_submission(reply(px_submit, pixy_item("init", "init")), NOW)  # tracks UID
    request = provider.batch_status_request([UID])
    known = {UID: previous} if previous is not None else {}
    states = call(lambda: provider.parse_batch_states(reply(request, payload), NOW, known))
    if states is not None:
        assert isinstance(states, dict)
        for uid, state in states.items():
            check_state(provider, state, uid, known.get(uid))


@FEW
@given(replies(PIXY_PAGES))
def test_pixy_parse_page(payload: Any) -> None:
    request = px.list_request("video")
    page = call(lambda: pixy().parse_page(reply(request, payload), NOW))
    if page is not None:
        assert isinstance(page, PixyPage)
        assert all(isinstance(n, int) for n in (page.total, page.offset, page.limit))
        for state in page.items:
            check_state(px, state, None, None)


# -- PiXYZ -------------------------------------------------------------------------------------

pz_files = Pixyz(api_key="pixyz_secret", base_url="http://pixyz.test:8001")
pz_archive = Pixyz(api_key="pixyz_secret", base_url="http://pixyz.test:8001", outputs="archive")
pixyz_modes = st.sampled_from([pz_files, pz_archive])


def pz_job(status: str, **overrides: Any) -> dict[str, Any]:
    job = {"uuid": JOB, "name": "bracket", "status": status, "progress": None, "error": None}
    return job | overrides


TRACEBACK = "Traceback (most recent call last):\n  File x\nProcessError: Pixyz Internal error\n"
PZ_JOBS = [
    pz_job("PENDING"),
    pz_job("RUNNING", progress=42),
    pz_job("SUCCESS", progress=100),
    pz_job("FAILURE", error="Task process timeout"),
    pz_job("REVOKED"),
]
PZ_DETAILS = [
    pz_job("FAILURE", error=TRACEBACK, time_info={"request": None}, steps=[], retry=0),
    pz_job("PENDING", time_info={"request": None, "started": None}, steps=None, result="None"),
    pz_job("SUCCESS", steps=[{"name": "load", "duration": 1.5}], result={"files": ["a.glb"]}),
]
pz_previous = previous_states("pixyz", JOB, None)


@MANY
@given(pixyz_modes, replies(PZ_JOBS + PZ_DETAILS), pz_previous)
@example(pz_files, pz_job("FAILURE", error="  \n "), None)
@example(pz_archive, pz_job("SUCCESS", uuid="not-a-uuid"), None)
@example(pz_files, pz_job("RUNNING", uuid="11111111-2222-4333-8444-555555555555"), None)
def test_pixyz_parse_state(provider: Pixyz, payload: Any, previous: JobState | None) -> None:
    (request,) = provider.status_requests(JOB, None)
    state = call(lambda: provider.parse_state(reply(request, payload), NOW, previous))
    if state is not None:
        check_state(provider, state, JOB, previous)
        if provider.outputs == "archive" and state.outputs:
            assert state.outputs[0].is_archive


@FEW
@given(pixyz_modes, replies(PZ_DETAILS))
def test_pixyz_parse_details(provider: Pixyz, payload: Any) -> None:
    request = provider.details_request(JOB)
    state = call(lambda: provider.parse_details(reply(request, payload), NOW))
    if state is not None:
        check_state(provider, state, JOB, None)


OTHER = "11111111-2222-4333-8444-555555555555"
QUEUED = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


@FEW
@given(
    pixyz_modes, replies([{"jobs": [*PZ_JOBS[1:3], pz_job("SUCCESS", uuid=OTHER)]}]), pz_previous
)
def test_pixyz_parse_batch_states(provider: Pixyz, payload: Any, previous: JobState | None) -> None:
    request = provider.batch_status_request([JOB, QUEUED])
    known = {JOB: previous} if previous is not None else {}
    states = call(lambda: provider.parse_batch_states(reply(request, payload), NOW, known))
    if states is not None:
        assert set(states) == {JOB, QUEUED}  # every asked job, none other
        for job_id, state in states.items():
            check_state(provider, state, job_id, known.get(job_id))


complete = JobState("pixyz", JOB, Status.COMPLETE, "SUCCESS", NOW, progress=1.0)
output_names = st.lists(st.text(max_size=10) | st.sampled_from([".", "..", "../x", "a/./b"]))


@MANY
@given(
    replies([{"outputs": ["iso.png", "sub/a b.png", "../evil"]}])
    | output_names.map(lambda names: {"outputs": names})
)
@example({"outputs": [""]})
@example({"outputs": ["\ud800.png"]})
def test_pixyz_parse_outputs(payload: Any) -> None:
    request = pz_files.outputs_request(complete)
    assert request is not None
    state = call(lambda: pz_files.parse_outputs(reply(request, payload), complete))
    if state is None:
        return
    check_state(pz_files, state, JOB, None, url_names=False)
    assert (state.status, state.native_status, state.progress) == (Status.COMPLETE, "SUCCESS", 1)
    prefix = f"{pz_files.base_url}/jobs/{JOB}/outputs/"
    for name, output in zip(payload["outputs"], state.outputs, strict=True):
        assert output.path == output.name == name
        if output.url is not None:  # one file of the job's directory, never another route
            assert output.url.startswith(prefix)
            assert output.url != prefix
            assert not {".", ".."} & set(output.url[len(prefix) :].split("/"))


@FEW
@given(replies([{"uuid": JOB, "name": None, "status": "SENT", "progress": None, "error": None}]))
@example({"uuid": JOB + "\n"})
def test_pixyz_parse_submission(payload: Any) -> None:
    request = pz_files.submit_request({"process": "api_test"})
    submission = call(lambda: pz_files.parse_submission(reply(request, payload), NOW))
    if submission is not None:
        check_submission(pz_files, submission)
        assert submission.job_id == JOB


@dataclass(frozen=True)
class Reader:
    """One of PiXYZ's other reply readers, and the type it returns."""

    name: str
    request: Request
    parse: Callable[[Response], Any]
    valid: Any
    check: Callable[[Any], bool]


PZ_READERS = [
    Reader(
        "jobs",
        pz_files.jobs_request(),
        pz_files.parse_jobs,
        {"jobs": PZ_JOBS},
        lambda v: isinstance(v, list) and all(isinstance(j, dict) for j in v),
    ),
    Reader(
        "processes",
        pz_files.processes_request(),
        pz_files.parse_processes,
        {"processes": ["sleep", "convert_file"]},
        lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
    ),
    Reader(
        "doc",
        pz_files.process_doc_request("sleep"),
        pz_files.parse_doc,
        {"doc": "Process 'sleep' documentation:"},
        lambda v: isinstance(v, str),
    ),
    Reader(
        "output names",
        pz_files.outputs_list_request(JOB),
        pz_files.parse_output_names,
        {"outputs": ["a.png", "sub/b.png"]},
        lambda v: isinstance(v, list) and all(isinstance(n, str) and n for n in v),
    ),
    Reader(
        "task meta",
        pz_files.task_meta_request(JOB),
        pz_files.parse_task_meta,
        {
            "status": "PENDING",
            "result": None,
            "traceback": None,
            "children": [],
            "parent_id": None,
            "task_id": None,
            "date_done": None,
        },
        lambda v: isinstance(v, dict) and "status" in v,
    ),
]


@pytest.mark.parametrize("reader", PZ_READERS, ids=lambda r: r.name)
@FEW
@given(data=st.data())
def test_pixyz_readers(reader: Reader, data: st.DataObject) -> None:
    payload = data.draw(replies([reader.valid]))
    value = call(lambda: reader.parse(reply(reader.request, payload)))
    if value is not None:
        assert reader.check(value)


@FEW
@given(
    st.text(max_size=60) | st.lists(st.sampled_from(["up 1", 'a{b="c"} 2 3', "# x"])).map("\n".join)
)
def test_pixyz_parse_metrics(text: str) -> None:
    samples = call(lambda: parse_metrics(text))
    if samples is not None:
        for name, values in samples.items():
            assert isinstance(name, str)
            assert all(isinstance(v, float) and isinstance(labels, dict) for labels, v in values)


# -- flux0 -------------------------------------------------------------------------------------

fx = Flux0(base_url="http://flux0.test:8080")


def stored(offset: int, type_: str, source: str, data: Any) -> dict[str, Any]:
    return {
        "id": f"E{offset:09d}", "correlation_id": CID, "type": type_, "source": source,
        "offset": offset, "data": data, "deleted": False,
        "created_at": "2025-07-01T09:00:00+00:00",
    }  # fmt: skip


def _status_event(offset: int, status: str) -> dict[str, Any]:
    return stored(offset, "status", "ai_agent", {"type": "status", "status": status})


USER = stored(
    0, "message", "user", {"type": "message", "parts": [{"type": "content", "content": "hi"}]}
)
REPLY = stored(4, "message", "ai_agent", {"type": "message", "parts": [
    {"type": "content", "content": "Hello"}, {"type": "reasoning", "reasoning": "hmm"},
]})  # fmt: skip
FLUX0_EVENTS = [
    {"data": [USER]},
    {"data": [USER, _status_event(1, "typing")]},
    {"data": [USER, _status_event(1, "typing"), REPLY]},
    {"data": [USER, stored(1, "status", "ai_agent", {"type": "status", "status": "error",
                                                     "data": {"exception": "boom"}})]},
]  # fmt: skip
fx_previous = previous_states("flux0", RUN, "message")


@MANY
@given(replies(FLUX0_EVENTS), fx_previous)
@example({"data": [USER | {"offset": "zero"}, REPLY]}, None)
@example({"data": [USER, REPLY | {"offset": 1e400}]}, None)
@example({"data": [REPLY | {"data": {"type": "message", "parts": 5}}]}, None)
def test_flux0_parse_state(payload: Any, previous: JobState | None) -> None:
    (request,) = fx.status_requests(RUN, None)
    state = call(lambda: fx.parse_state(reply(request, payload), NOW, previous))
    if state is not None:
        check_state(fx, state, RUN, previous)


@FEW
@given(replies(FLUX0_EVENTS))
def test_flux0_find_message(payload: Any) -> None:
    request = fx.final_message_request(RUN)
    message = call(lambda: fx.find_message(reply(request, payload)))
    if message is not None:
        assert isinstance(message, Mapping)
        assert isinstance(message["data"], Mapping)


def sse(event: str, payload: Any, event_id: str | None = None) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + data + b"\n\n"


STATUS_BLOCK = {"id": "Rn4kQ2xVb8", "source": "ai_agent", "type": "status", "correlation_id": CID,
                "data": {"type": "status", "status": "typing"}, "metadata": None}  # fmt: skip
CHUNK_BLOCK = {"correlation_id": CID, "event_id": "Qm3vT7pL1s", "seq": 0,
               "patches": [{"op": "add", "path": "/-", "value": "Hi"}]}  # fmt: skip
blocks = st.one_of(
    replies([STATUS_BLOCK]).map(lambda p: sse("status", p, "Rn4kQ2xVb8")),
    replies([CHUNK_BLOCK]).map(lambda p: sse("chunk", p)),
    st.tuples(st.sampled_from(["status", "chunk", "message", ""]), bodies).map(
        lambda pair: sse(*pair)
    ),
    bodies,
)
streams = st.lists(blocks, max_size=4).map(b"".join)
DEEP = b"[" * 2_000 + b"]" * 2_000


@FEW
@given(streams)
@example(sse("status", STATUS_BLOCK | {"correlation_id": None}, "1"))
@example(sse("chunk", DEEP))
@example(sse("chunk", CHUNK_BLOCK | {"patches": [{"op": "add", "path": "/0" * 2_000, "value": 1}]}))
def test_flux0_parse_submission_and_run_tracker(stream: bytes) -> None:
    request = fx.create_event_request(SID, "hi")
    submission = call(lambda: fx.parse_submission(reply(request, stream, "text/event-stream"), NOW))
    if submission is not None:
        check_submission(fx, submission)
        session, _, correlation = submission.job_id.partition("/")
        assert (session, submission.kind) == (SID, "message")
        # A correlation id the stream itself wrote as a string, not a repr of something else.
        assert json.dumps(correlation)[1:-1] in stream.decode("utf-8", "replace")
    tracker = RunTracker(fx, SID, NOW)
    for state in [*tracker.feed(stream, NOW), tracker.closed(NOW)]:
        check_state(fx, state, None, None)
    assert tracker.state.is_terminal


# -- unknown statuses (rule 1) -----------------------------------------------------------------


def _unknown(known: Any) -> st.SearchStrategy[str]:
    return st.text(max_size=12).filter(lambda s: s not in known and s != "error")


def _rule_1(state: Any, previous: JobState | None, *, keeps_previous: bool = True) -> None:
    assert isinstance(state, JobState)
    if previous is not None and previous.is_terminal:
        assert state.status is previous.status
        return
    assert not state.is_terminal
    if keeps_previous:
        assert state.status is (previous.status if previous is not None else Status.QUEUED)


@FEW
@given(_unknown({s.value for s in Status}), mh_previous)
@example("complete ", None)
def test_unknown_magichour_status_is_not_terminal(native: str, previous: JobState | None) -> None:
    request = mh.status_requests("p1", "image")[0]
    _rule_1(mh.parse_state(reply(request, mh_project(native)), NOW, previous), previous)


@FEW
@given(
    st.booleans(),
    _unknown(set(BY_STATUS) | set(BY_TASK_STATUS)),
    st.sampled_from(sorted(set(BY_TASK_STATUS) - {"error"})),
)
def test_unknown_pixy_status_is_not_terminal(video: bool, native: str, task: str) -> None:
    # Either field reading `error` is an error, so the other field stays known and not error.
    payload = pixy_item(None, native) if video else pixy_item(native, task)
    request = px.status_requests(UID, "video" if video else "image")[0]
    running = JobState("pixy", UID, Status.RENDERING, "running", NOW - timedelta(seconds=5))
    for previous in (None, running):
        _rule_1(pixy().parse_state(reply(request, payload), NOW, previous), previous)


@FEW
@given(pixyz_modes, _unknown(PIXYZ_STATUSES), pz_previous)
def test_unknown_pixyz_status_is_not_terminal(
    provider: Pixyz, native: str, previous: JobState | None
) -> None:
    (request,) = provider.status_requests(JOB, None)
    _rule_1(provider.parse_state(reply(request, pz_job(native)), NOW, previous), previous)


@FEW
@given(_unknown(FLUX0_STATUSES), fx_previous)
def test_unknown_flux0_status_is_not_terminal(native: str, previous: JobState | None) -> None:
    (request,) = fx.status_requests(RUN, None)
    payload = {"data": [USER, _status_event(1, native)]}
    # Polling replays the run's whole event list, so it does not read the previous status.
    state = fx.parse_state(reply(request, payload), NOW, previous)
    _rule_1(state, previous, keeps_previous=False)
    tracker = RunTracker(fx, SID, NOW)
    states = tracker.feed(sse("status", STATUS_BLOCK | {"data": {"status": native}}, "1"), NOW)
    assert not tracker.state.is_terminal
    assert [s.native_status for s in states] in ([], [native])


# -- bytes that are not JSON, for every JSON hook ----------------------------------------------

JSON_HOOKS: list[tuple[str, Request, Callable[[Response], Any]]] = [
    (
        "magichour state",
        mh.status_requests("p1", "image")[0],
        lambda r: mh.parse_state(r, NOW, None),
    ),
    ("magichour submission", mh_submit, lambda r: mh.parse_submission(r, NOW)),
    ("pixy state", px.status_requests(UID, "image")[0], lambda r: px.parse_state(r, NOW, None)),
    ("pixy submission", px_submit, lambda r: pixy().parse_submission(r, NOW)),
    ("pixy batch", px.batch_status_request([UID]), lambda r: px.parse_batch_states(r, NOW, {})),
    ("pixy page", px.list_request("image"), lambda r: px.parse_page(r, NOW)),
    (
        "pixyz state",
        pz_archive.status_requests(JOB, None)[0],
        lambda r: pz_archive.parse_state(r, NOW, None),
    ),
    ("pixyz details", pz_files.details_request(JOB), lambda r: pz_files.parse_details(r, NOW)),
    ("pixyz batch", pz_files.jobs_request(), lambda r: pz_files.parse_batch_states(r, NOW, {})),
    (
        "pixyz outputs",
        pz_files.outputs_list_request(JOB),
        lambda r: pz_files.parse_outputs(r, complete),
    ),
    ("pixyz submission", pz_files.jobs_request(), lambda r: pz_files.parse_submission(r, NOW)),
    *((f"pixyz {r.name}", r.request, r.parse) for r in PZ_READERS),
    ("flux0 state", fx.status_requests(RUN, None)[0], lambda r: fx.parse_state(r, NOW, None)),
    ("flux0 events", fx.final_message_request(RUN), fx.events),
]


@pytest.mark.parametrize(("name", "request_", "parse"), JSON_HOOKS, ids=[h[0] for h in JSON_HOOKS])
@settings(FEW, max_examples=40)
@given(body=bodies, ctype=content_types)
def test_bytes_that_are_not_json(
    name: str, request_: Request, parse: Callable[[Response], Any], body: bytes, ctype: str
) -> None:
    call(lambda: parse(reply(request_, body, ctype)))


@pytest.mark.parametrize("body", NOT_JSON[4:], ids=["deep", "long int", "long int inside"])
def test_undecodable_json_is_a_protocol_error_naming_the_reply(body: bytes) -> None:
    request = mh.status_requests("p1", "image")[0]
    with pytest.raises(ProtocolError, match=r"get project job p1: reply is not JSON \(HTTP 200"):
        reply(request, body).json()


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2_000, 200_000])
def test_a_reply_nested_beyond_the_limit_is_refused_on_every_python(depth: int) -> None:
    # MAX_DEPTH + 1 is well within every interpreter's own decoder: the limit is pollkit's.
    request = mh.status_requests("p1", "image")[0]
    body = b'{"id": "p1", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(ProtocolError, match=rf"p1: reply is not JSON .*deeper than {MAX_DEPTH}"):
        reply(request, body).json()
    assert (
        reply(
            request, b'{"id": "p1", "x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
        ).json()["id"]
        == "p1"
    )


def test_what_the_fixed_parsers_now_say() -> None:
    """The behaviour chosen for each bug these properties found, stated exactly."""
    (image,) = mh.status_requests("p1", "image")
    done = JobState("magichour", "p1", Status.COMPLETE, "complete", NOW - timedelta(seconds=5))
    assert mh.parse_state(reply(image, mh_project("rendering")), NOW, done).status is (
        Status.COMPLETE  # rule 3, and "deleted after completion keeps its terminal status"
    )
    naive = {"url": "http://cdn.test/a.png", "expires_at": "2025-06-04T10:15:00"}
    (output,) = mh.parse_state(
        reply(image, mh_project("complete", downloads=[naive])), NOW, None
    ).outputs
    assert output.expires_at == datetime(2025, 6, 4, 10, 15, tzinfo=timezone.utc)
    with pytest.raises(ProtocolError, match=r"get project job p1: .*another project, 'p2'"):
        mh.parse_state(reply(image, mh_project("rendering", id="p2")), NOW, None)
    with pytest.raises(ProtocolError, match="invalid project id 'a/b'"):
        mh.parse_submission(reply(mh_submit, {"id": "a/b"}), NOW)

    (status,) = pz_files.status_requests(JOB, None)
    failed = pz_files.parse_state(reply(status, pz_job("FAILURE", error=" \n ")), NOW, None)
    assert str(failed.error) == "the job failed"
    names = reply(pz_files.outputs_list_request(JOB), {"outputs": ["a.png", "\ud800.png"]})
    assert [o.url is None for o in pz_files.parse_outputs(names, complete).outputs] == [False, True]
    with pytest.raises(ProtocolError, match=rf"list outputs job {JOB}: outputs reply has no"):
        pz_files.parse_output_names(reply(pz_files.outputs_list_request(JOB), {"outputs": [""]}))

    item = pixy_item(
        "completed", "completed", results=[{"url": "http://[x/a.png"}, {"url": "h/%2E."}]
    )
    (listed,) = px.parse_state(reply(px.status_requests(UID, "image")[0], item), NOW, None).outputs
    assert (listed.url, listed.name) == ("h/%2E.", None)  # unfetchable URL left out, ".." unnamed

    bad_offset = {"data": [USER | {"offset": None}]}
    with pytest.raises(ProtocolError, match="list_events reply is not"):
        fx.events(reply(fx.final_message_request(RUN), bad_offset))
    stream = sse("status", STATUS_BLOCK | {"correlation_id": None}, "1")
    with pytest.raises(ProtocolError, match="named no correlation id"):
        fx.parse_submission(reply(fx.create_event_request(SID, "hi"), stream), NOW)
