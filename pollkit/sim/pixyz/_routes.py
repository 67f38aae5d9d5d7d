"""The PiXYZ Scheduler dialect (docs/apis/pixyz.md): processes, jobs, outputs and archives.

Served under ``/pixyz`` on the simulator (see `pollkit.sim.Simulator.urls`), faithful to the
quirks of 3.11: ``SENT`` only in the POST reply, an unknown uuid reads ``PENDING`` (never 404),
400 envelopes (never 422), 401 checked before the path, ``name`` null until ``RUNNING``, the
archive's 425 state machine, ``Content-Length`` on every file, ``GET /jobs`` listing the
internal packaging tasks (and, as with Celery, no record for jobs still queued).

Scripting a ``custom`` job: a comment ``# pollkit-sim: key=value …`` in its script sets
``outcome=success|failure|revoked|pending``, ``stuck=RECEIVED|STARTED|RETRY|REJECTED|UNKNOWN|
PENDING`` (that native status forever, once out of the queue), ``queue=S`` and ``render=S``
(simulated seconds), ``steps=N`` and ``outputs=a.txt,b.bin`` (the files it writes; any names,
hostile ones included). Otherwise durations and outcomes come from the scenario and
`Simulator.plan_next` (``canceled`` reads ``REVOKED``, ``error`` ``FAILURE``, ``draft`` ``PENDING``
forever); ``/_sim/jobs/{uuid}/cancel`` revokes a job.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import posixpath
import random
import uuid as uuid_module
import zipfile
from typing import Any

from aiohttp import BodyPartReader, web

from pollkit.sim._state import STATE, Job, SimState
from pollkit.sim.pixyz._processes import DOCS, PROCESSES, ProcessError, phase, plan_process
from pollkit.sim.pixyz._replies import (
    STORE,
    Archive,
    PixyzStore,
    aware,
    count_bytes,
    details,
    envelope,
    find_job,
    handler,
    job_state,
    metrics_text,
    naive,
    traceback_text,
)
from pollkit.sim.transfer._routes import _delivery
from pollkit.sim.transfer._serve import bytes_entity, serve

__all__ = ["DIALECT", "PREFIX", "PixyzStore", "add_routes"]

DIALECT = "pixyz"
PREFIX = "/pixyz"
VERSION = "1.0.7"

logger = logging.getLogger("pollkit.sim.pixyz")

_IMMUTABLE = frozenset({"script", "data", "shadow", "uuid"})
# A status Celery setups often add (Scenario.unknown_status_rate shows it mid-render).
_UNKNOWN_STATUS = "PROGRESS"

# -- unauthenticated routes -----------------------------------------------------------------


@handler(auth=False)
async def _welcome(request: web.Request) -> web.StreamResponse:
    return web.Response(text=f"Welcome to PiXYZ API v{VERSION}!")


@handler(auth=False)
async def _processes(request: web.Request) -> web.StreamResponse:
    return web.json_response({"processes": list(PROCESSES)})


@handler(auth=False)
async def _process_doc(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in PROCESSES:
        return envelope(400, f"Invalid process '{name}'")
    if name not in DOCS:
        # A script without a ``main`` (``__init__``): the server raises its 404 inside a
        # ``try`` that turns every exception into a 500, so the 404's str() becomes the details.
        inner = {
            "code": 404,
            "message": "Not Found",
            "details": f"No documentation found for '{name}' process",
        }
        return envelope(500, f"HTTPException: 404: {inner!r}")
    # A ``main`` without a docstring reads as the text "None", as the server formats it.
    return web.json_response({"doc": f"Process '{name}' documentation:\n\n{DOCS[name]}"})


@handler(auth=False)
async def _callback(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return envelope(400, "RequestValidationError: body: Input should be a valid dictionary")
    logger.debug("dev callback: %s", body)
    return web.json_response(None)


@handler(auth=False)
async def _metrics(request: web.Request) -> web.StreamResponse:
    text = metrics_text(request.app[STATE], request.app[STORE]).encode()
    headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        text = gzip.compress(text)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=text, headers=headers)


# -- jobs -----------------------------------------------------------------------------------


async def _read_form(request: web.Request) -> dict[str, Any]:
    """The form's fields: text values, and ``(filename, size or text)`` for files."""
    fields: dict[str, Any] = {}
    if not request.content_type.startswith("multipart/"):
        # FastAPI's Form() takes a urlencoded body too (a form without files, say).
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is None:
            text = await part.text()
            if text != "":  # empty form values count as absent
                fields[part.name] = text
            continue
        if part.name == "script":
            fields["script"] = (part.filename, (await part.read()).decode("utf-8", "replace"))
            continue
        size = 0
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
        fields[part.name] = (part.filename, size)
    return fields


def _json_field(fields: dict[str, Any], name: str) -> dict[str, Any]:
    raw = fields.get(name)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ProcessError(f"JSONDecodeError: Invalid JSON in {name}: {exc}") from exc
    if not isinstance(value, dict):
        raise ProcessError(f"ValueError: {name} must be a JSON object")
    return value


@handler(auth=True)
async def _create(request: web.Request) -> web.StreamResponse:
    state, store = request.app[STATE], request.app[STORE]
    fields = await _read_form(request)
    try:
        params = _json_field(fields, "params")
        overrides = _json_field(fields, "config")
        process = fields.get("process", "custom")
        config: dict[str, Any] = {"entrypoint": "main", "queue": "cpu", "time_limit": 3600}
        config |= {k: v for k, v in overrides.items() if k not in _IMMUTABLE and v is not None}
        script = fields.get("script")
        if process == "custom":
            if script is None:
                raise ProcessError("ValueError: a script is required for the custom process")
            if f"def {config['entrypoint']}(" not in script[1]:
                raise ProcessError(
                    f"ValueError: entry point '{config['entrypoint']}' not found in the script"
                )
        upload = fields.get("file")
        plan = plan_process(
            str(process),
            params,
            file_name=upload[0] if upload else None,
            file_size=upload[1] if upload else 0,
            entrypoint=str(config["entrypoint"]),
            script=script[1] if script else None,
        )
    except ProcessError as exc:
        return envelope(400, str(exc))
    name = fields.get("name")
    job = state.create_job(
        dialect=DIALECT,
        kind=plan.process,
        type_=plan.process,
        outputs=plan.outputs,
        details={},
        id_style="uuid",
    )
    with state.lock:
        if plan.outcome is not None:
            job.outcome = plan.outcome
        if plan.queue_delay is not None:
            job.queue_delay = plan.queue_delay
        if plan.render_time is not None:
            job.render_time = plan.render_time
        result = dict(plan.result)
        if "process_duration" in result:
            result["process_duration"] = round(job.render_time, 3)
        job.details.update(
            name=name,
            process=plan.process,
            params=params,
            config=config,
            steps=plan.steps,
            result=result,
            error=plan.error,
            stuck=plan.stuck,
            input=upload[0] if upload else None,
        )
    with store.lock:
        store.dirs.add(job.id)
    reply = {"uuid": job.id, "name": name, "status": "SENT", "progress": None, "error": None}
    return web.json_response(reply)


def _shown(state: SimState, body: dict[str, Any], now: float) -> dict[str, Any]:
    """A job's body as a status read shows it: maybe with an unknown native status."""
    job = find_job(state, body["uuid"])
    if job is not None and state.shows_unknown_status(job, now):
        return {**body, "status": _UNKNOWN_STATUS}
    return body


@handler(auth=True)
async def _list_jobs(request: web.Request) -> web.StreamResponse:
    state, store = request.app[STATE], request.app[STORE]
    now = state.clock.now()
    with state.lock:
        ids = [j.id for j in state.jobs.values() if j.dialect == DIALECT]
    with store.lock:
        tasks = [a.task_id for a in store.archives.values()]
    listed = [job_state(state, store, i, now) for i in ids + tasks]
    # The backend has no record of a task no worker took yet: queued jobs are not listed.
    shown = [_shown(state, j, now) for j in listed if j["status"] != "PENDING"]
    return web.json_response({"jobs": shown})


def _touch(state: SimState, job_uuid: str) -> None:
    job = find_job(state, job_uuid)
    if job is not None:
        with state.lock:
            job.status_requests += 1


@handler(auth=True, uuid=True)
async def _get_job(request: web.Request) -> web.StreamResponse:
    state, job_uuid = request.app[STATE], request.match_info["job_uuid"]
    _touch(state, job_uuid)
    now = state.clock.now()
    return web.json_response(
        _shown(state, job_state(state, request.app[STORE], job_uuid, now), now)
    )


@handler(auth=True, uuid=True)
async def _get_details(request: web.Request) -> web.StreamResponse:
    state, job_uuid = request.app[STATE], request.match_info["job_uuid"]
    _touch(state, job_uuid)
    now = state.clock.now()
    return web.json_response(_shown(state, details(state, request.app[STORE], job_uuid, now), now))


@handler(auth=True, uuid=True)
async def _task_meta(request: web.Request) -> web.StreamResponse:
    state, job_uuid = request.app[STATE], request.match_info["job_uuid"]
    job = find_job(state, job_uuid)
    now = state.clock.now()
    meta: dict[str, Any] = {
        "status": "PENDING",
        "result": None,
        "traceback": None,
        "children": [],
        "parent_id": None,
        "task_id": None,
        "date_done": None,
    }
    seen = phase(job, now) if job is not None else None
    if job is None or seen is None or seen.status == "PENDING":
        return web.json_response(meta)
    meta.update(status=seen.status, task_id=job.id)
    if seen.status in ("SUCCESS", "FAILURE", "REVOKED"):
        meta["date_done"] = aware(seen.stopped, state)
    if seen.status == "FAILURE":
        meta["result"] = {
            "exc_type": "ProcessError",
            "exc_message": [job.details["error"]],
            "exc_module": "pixyz_worker.exception",
        }
        meta["traceback"] = traceback_text(job)
    elif seen.status == "REVOKED":
        meta["result"] = {"exc_type": "TaskRevokedError", "exc_message": ["revoked"]}
    else:
        meta["result"] = {
            "name": job.details["name"],
            "progress": seen.progress,
            "steps": seen.steps,
            "time_info": {
                "request": naive(seen.request, state),
                "started": aware(seen.started, state),
                "stopped": aware(seen.stopped, state),
            },
            "shadow_name": job.details["process"],
            "result": seen.result if seen.status == "SUCCESS" else {},
        }
    return web.json_response(meta)


# -- outputs --------------------------------------------------------------------------------


def _finished_outputs(job: Job | None, now: float) -> list[str]:
    if job is None or phase(job, now).status != "SUCCESS":
        return []
    return [output.name for output in job.outputs]


@handler(auth=True, uuid=True)
async def _outputs(request: web.Request) -> web.StreamResponse:
    state, store = request.app[STATE], request.app[STORE]
    job_uuid = request.match_info["job_uuid"]
    with store.lock:
        store.dirs.add(job_uuid.lower())  # the real server creates the directory as it looks
    names = _finished_outputs(find_job(state, job_uuid), state.clock.now())
    return web.json_response({"outputs": names})


@handler(auth=True, uuid=True)
async def _output_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job_uuid, path = request.match_info["job_uuid"], request.match_info["file_path"]
    resolved = posixpath.normpath(posixpath.join(job_uuid, "outputs", path))
    if path.startswith("/") or resolved.split("/")[0] != job_uuid:
        return envelope(400, f"SharePathError: Path 'outputs/{path}' is outside the job directory")
    job = find_job(state, job_uuid)
    now = state.clock.now()
    output = None
    if job is not None and path in _finished_outputs(job, now):
        output = next(o for o in job.outputs if o.name == path)
    if job is None or output is None:
        return envelope(404, f"SharePathNotFoundError: File 'outputs/{path}' not found")
    info, data = state.file_data(job, output)
    entity = bytes_entity(
        data,
        etag=info.etag,
        media_type="application/octet-stream",
        modified_at=state.clock.wall(job.finishes_at),
        filename=posixpath.basename(path),
    )
    return await serve(request, entity, _delivery(request, count_bytes(request, "file")))


def _zip(state: SimState, job: Job, now: float) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in _finished_outputs(job, now):
            output = next(o for o in job.outputs if o.name == name)
            _, data = state.file_data(job, output)
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def _draw_delay(state: SimState, store: PixyzStore) -> float:
    duration = state.scenario.archive_delay
    if isinstance(duration, tuple):
        return store.rng.uniform(*duration)
    share = store.rng.random() or 0.5
    return duration.quantile(share)


@handler(auth=True, uuid=True)
async def _archive(request: web.Request) -> web.StreamResponse:
    state, store = request.app[STATE], request.app[STORE]
    job_uuid = request.match_info["job_uuid"].lower()
    now = state.clock.now()
    job = find_job(state, job_uuid)
    with store.lock:
        has_dir = job_uuid in store.dirs
        packing = store.archives.get(job_uuid)
    if not has_dir:
        return envelope(404, f"SharePathNotFoundError: Job '{job_uuid}' does not exist")
    status = phase(job, now).status if job is not None else "PENDING"
    if job is None or status not in ("SUCCESS", "FAILURE"):
        state.count_fault("archive_not_ready")
        return envelope(425, f"TaskNotCompletedError: Job '{job_uuid}' is not finished yet")
    if packing is not None and now >= packing.ready_at:
        if packing.data is None:
            packing.data = _zip(state, job, now)  # packed once, then cached: never rebuilt
        entity = bytes_entity(
            packing.data,
            etag=f'"{hashlib.sha256(packing.data).hexdigest()}"',
            media_type="application/zip",
            modified_at=state.clock.wall(packing.ready_at),
            filename=f"{job_uuid}.zip",
        )
        return await serve(request, entity, _delivery(request, count_bytes(request, "archive")))
    state.count_fault("archive_not_ready")
    if packing is not None:
        return envelope(
            425, f"TaskNotCompletedError: Archive task for job '{job_uuid}' is already running"
        )
    with store.lock:
        task_id = str(uuid_module.UUID(int=store.rng.getrandbits(128), version=4))
        store.archives[job_uuid] = Archive(task_id, now + _draw_delay(state, store))
    return envelope(
        425, f"TaskProcessingStarted: Archive Task '{task_id}' created for job '{job_uuid}' outputs"
    )


def add_routes(app: web.Application) -> None:
    """Register the dialect's routes on `app` (which holds `STATE` and `FAULTS`)."""
    state = app[STATE]
    app[STORE] = PixyzStore(rng=random.Random(f"{state.scenario.seed}:pixyz"))
    routes = app.router
    routes.add_get(f"{PREFIX}/", _welcome, allow_head=False)
    routes.add_get(f"{PREFIX}/processes", _processes, allow_head=False)
    routes.add_get(f"{PREFIX}/processes/{{name}}", _process_doc, allow_head=False)
    routes.add_get(f"{PREFIX}/jobs", _list_jobs, allow_head=False)
    routes.add_post(f"{PREFIX}/jobs", _create)
    routes.add_get(f"{PREFIX}/jobs/{{job_uuid}}", _get_job, allow_head=False)
    routes.add_get(f"{PREFIX}/jobs/{{job_uuid}}/details", _get_details, allow_head=False)
    routes.add_get(f"{PREFIX}/jobs/{{job_uuid}}/outputs", _outputs, allow_head=False)
    routes.add_get(f"{PREFIX}/jobs/{{job_uuid}}/outputs/archive", _archive)
    routes.add_get(f"{PREFIX}/jobs/{{job_uuid}}/outputs/{{file_path:.+}}", _output_file)
    routes.add_get(f"{PREFIX}/backend/get_task_meta/{{job_uuid}}", _task_meta, allow_head=False)
    routes.add_post(f"{PREFIX}/dev/callback", _callback)
    routes.add_get(f"{PREFIX}/metrics", _metrics, allow_head=False)
