"""Replies and plumbing of the PiXYZ simulator: the error envelope, the key check, job
bodies (JobState, JobDetails), the metrics text, and what the dialect remembers."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from pollkit.sim._state import STATE, Job, SimState
from pollkit.sim.pixyz._processes import phase

__all__ = [
    "STORE",
    "Archive",
    "Handler",
    "PixyzStore",
    "aware",
    "count_bytes",
    "details",
    "envelope",
    "find_job",
    "handler",
    "job_state",
    "metrics_text",
    "naive",
    "traceback_text",
]

DIALECT = "pixyz"
PREFIX = "/pixyz"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MESSAGES = {400: "Bad Request", 404: "Not Found", 425: "Too early", 500: "Internal Server Error"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Archive:
    task_id: str
    ready_at: float
    data: bytes | None = None


@dataclass(slots=True)
class PixyzStore:
    """What the dialect remembers besides the jobs: job directories, archives, metrics."""

    dirs: set[str] = field(default_factory=set)
    archives: dict[str, Archive] = field(default_factory=dict)
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    bytes_served: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.Lock = field(default_factory=threading.Lock)


STORE: web.AppKey[PixyzStore] = web.AppKey("pollkit_sim_pixyz", PixyzStore)


# -- replies --------------------------------------------------------------------------------


def envelope(code: int, details: str) -> web.Response:
    body = {"detail": {"code": code, "message": _MESSAGES.get(code, "Error"), "details": details}}
    return web.json_response(body, status=code)


def unauthorized() -> web.Response:
    return web.json_response(
        {"detail": "Invalid token"}, status=401, headers={"WWW-Authenticate": "x-api-key"}
    )


def authorized(request: web.Request, state: SimState) -> bool:
    given = request.headers.get("x-api-key")
    if given is None:
        return False
    expected = hashlib.sha256(state.api_key.encode()).hexdigest()
    return hmac.compare_digest(hashlib.sha256(given.encode()).hexdigest(), expected)


def naive(t: float | None, state: SimState) -> str | None:
    if t is None:
        return None
    moment = datetime.fromtimestamp(state.clock.wall(t), tz=timezone.utc)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


def aware(t: float | None, state: SimState) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(state.clock.wall(t), tz=timezone.utc).isoformat(
        timespec="microseconds"
    )


def find_job(state: SimState, job_uuid: str) -> Job | None:
    job = state.jobs.get(job_uuid.lower())
    return job if job is not None and job.dialect == DIALECT else None


def job_state(state: SimState, store: PixyzStore, job_uuid: str, now: float) -> dict[str, Any]:
    job = find_job(state, job_uuid)
    if job is None:
        task = next((a for a in store.archives.values() if a.task_id == job_uuid), None)
        status = "PENDING" if task is None else ("SUCCESS" if now >= task.ready_at else "STARTED")
        return {"uuid": job_uuid, "name": None, "status": status, "progress": None, "error": None}
    seen = phase(job, now)
    return {
        "uuid": job.id,
        "name": job.details["name"] if seen.named else None,
        "status": seen.status,
        "progress": seen.progress,
        "error": job.details["error"] if seen.status == "FAILURE" else None,
    }


def traceback_text(job: Job) -> str:
    entry = job.details["config"]["entrypoint"]
    return (
        "Traceback (most recent call last):\n"
        '  File "/app/pixyz_worker/tasks.py", line 212, in execute_process\n'
        f"    result = {entry}(**params)\n"
        f'  File "/share/{job.id}/process.py", line 42, in {entry}\n'
        "    raise ProcessError(error)\n"
        f"ProcessError: {job.details['error']}\n"
    )


def details(state: SimState, store: PixyzStore, job_uuid: str, now: float) -> dict[str, Any]:
    body = job_state(state, store, job_uuid, now)
    job = find_job(state, job_uuid)
    if job is None:
        return body | {
            "time_info": {"request": None, "started": None, "stopped": None},
            "steps": None,
            "retry": 0,
            "result": "None",
        }
    seen = phase(job, now)
    if seen.status == "FAILURE":
        body["error"] = traceback_text(job)
    return body | {
        "time_info": {
            "request": naive(seen.request, state),
            "started": aware(seen.started, state),
            "stopped": aware(seen.stopped, state),
        },
        "steps": seen.steps,
        "retry": 0,
        "result": seen.result,
    }


# -- plumbing -------------------------------------------------------------------------------


def handler(*, auth: bool, uuid: bool = False) -> Callable[[Handler], Handler]:
    """Wrap a handler: the key first (401 beats 400), then the uuid, then metrics counting."""

    def wrap(inner: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            state = request.app[STATE]
            response: web.StreamResponse
            if auth and not authorized(request, state):
                response = unauthorized()
            elif uuid and not _UUID.match(request.match_info["job_uuid"]):
                value = request.match_info["job_uuid"]
                response = envelope(
                    400,
                    "RequestValidationError: path.job_uuid: String should match pattern "
                    f"'^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' "
                    f"(input: {value!r})",
                )
            else:
                response = await inner(request)
            resource = request.match_info.route.resource
            route = resource.canonical.removeprefix(PREFIX) if resource is not None else "?"
            store = request.app[STORE]
            with store.lock:
                store.requests[(request.method, route or "/", str(response.status))] += 1
            return response

        return handle

    return wrap


def count_bytes(request: web.Request, kind: str) -> Callable[[int], None]:
    state, store = request.app[STATE], request.app[STORE]
    counter = state.count_archive_bytes if kind == "archive" else state.count_file_bytes

    def on_bytes(count: int) -> None:
        counter(count)
        with store.lock:
            store.bytes_served[kind] += count

    return on_bytes


def metrics_text(state: SimState, store: PixyzStore) -> str:
    now = state.clock.now()
    with state.lock:
        jobs = [j for j in state.jobs.values() if j.dialect == DIALECT]
    statuses = Counter(phase(job, now).status for job in jobs)
    with store.lock:
        requests = sorted(store.requests.items())
        served = sorted(store.bytes_served.items())
    lines = [
        "# HELP http_requests_total Total number of requests by method, handler and status.",
        "# TYPE http_requests_total counter",
    ]
    lines += [
        f'http_requests_total{{handler="{route}",method="{method}",status="{status}"}} {count}'
        for (method, route, status), count in requests
    ]
    lines += [
        "# HELP http_response_bytes_total Body bytes of output files and archives served.",
        "# TYPE http_response_bytes_total counter",
    ]
    lines += [f'http_response_bytes_total{{kind="{kind}"}} {count}' for kind, count in served]
    lines += ["# HELP pixyz_jobs Jobs by native status.", "# TYPE pixyz_jobs gauge"]
    lines += [f'pixyz_jobs{{status="{s}"}} {n}' for s, n in sorted(statuses.items())]
    return "\n".join(lines) + "\n"
