"""The Pixy dialect (docs/apis/pixy.md): image, video and subtitle generation.

Everything is served under ``/pixy`` on the simulator (`pollkit.sim.Simulator.urls`):

* ``POST /pixy/api_key/verify``: the SSO key check (200 ``{}`` or 401), which the real SDK
  makes on ``sso.pixy.ir``; here the media and SSO "hosts" share the prefix, so one base URL
  serves both.
* ``/pixy/v1/apps/imagine/imagination/``, ``/pixy/v1/apps/videogen/videos/`` and
  ``/pixy/v1/apps/subtitle/subtitles/``: ``POST`` (201), ``GET`` (offset pages, newest first),
  and ``GET``/``PATCH``/``DELETE`` on ``{uid}``.

Faithful where clients can tell: the key goes in ``x-api-key``; 201 with ``status: init``,
``task_progress: -1`` and ``results: null``; the keys of docs/apis/pixy.md in their order; the two
status fields in step (``cancelled`` → ``task_status: completed``); progress that only rises;
``task_logs`` growing on every save; naive timestamps with microseconds; FastAPI's 422
``{"detail": [...]}``; ``{"message", "error": "item_not_found"}`` 404s, but ``{"detail": "Not
Found"}`` for a uid that is not a UUID; a soft delete; ``PATCH`` answering 405 or 200 as
``Scenario.pixy_update`` says; webhooks. How a job unfolds is in `pollkit.sim.pixy._items`.

Webhooks: a video or subtitle job with a ``webhook_url`` (or ``meta_data.webhook`` /
``meta_data.webhook_url``) gets one background task that POSTs the whole item plus
``task_type`` to each target at every save, as it happens on the simulated clock (the task
wakes at least every 50 ms, so ``clock.advance`` is noticed). No signature, no retry; a failed
delivery adds a ``webhook_error`` entry to ``task_logs``. The tasks stop when the job ends or
is deleted, and are cancelled when the simulator stops.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pollkit.sim._state import STATE, Job, SimState
from pollkit.sim.pixy._items import (
    KINDS,
    TASK_TYPES,
    applied,
    body_model,
    naive_iso,
    outputs_for,
    render,
    timeline,
    validation_detail,
)

__all__ = ["DIALECT", "PREFIX", "add_routes"]

logger = logging.getLogger("pollkit.sim")

DIALECT = "pixy"
PREFIX = "/pixy"

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NOT_FOUND_NAMES = {"image": "Imagination", "video": "Video", "subtitle": "Subtitle"}
# Longest real sleep of a webhook task, so a jump of the simulated clock is seen soon.
_WAKE = 0.05
_WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# A status the API might add one day (Scenario.unknown_status_rate shows it mid-render).
_UNKNOWN_STATUS = "postprocessing"

_Handler = Callable[[web.Request], Awaitable[web.Response]]


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def _not_found(kind: str) -> web.Response:
    message = f"{_NOT_FOUND_NAMES[kind]} not found"
    return web.json_response({"message": message, "error": "item_not_found"}, status=404)


def _authorized(request: web.Request, state: SimState) -> bool:
    key = request.headers.get("x-api-key", "")
    return hmac.compare_digest(key.encode(), state.api_key.encode())


def _unauthorized() -> web.Response:
    return web.json_response({"message": "Invalid API key", "error": "unauthorized"}, status=401)


async def _json(request: web.Request) -> tuple[Any, web.Response | None]:
    """The decoded body, or FastAPI's 422 for a body that is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw), None
    except ValueError:
        detail = [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]
        return None, _detail(422, detail)


def _validate(model: type[BaseModel], body: Any) -> tuple[BaseModel | None, web.Response | None]:
    try:
        return model.model_validate(body), None
    except ValidationError as exc:
        return None, _detail(422, validation_detail(exc, "body"))


# -- webhooks ----------------------------------------------------------------------------------


def _targets(job: Job) -> list[str]:
    fields = job.details["fields"]
    meta = fields.get("meta_data") or {}
    found = [fields.get("webhook_url"), meta.get("webhook"), meta.get("webhook_url")]
    return [url for url in found if isinstance(url, str) and url]


class _Webhooks:
    """One delivery task per job that has webhook targets."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def watch(self, job: Job) -> None:
        """Start delivering `job`'s saves, unless that already runs or it has no target."""
        running = self.tasks.get(job.id)
        if (running is not None and not running.done()) or not _targets(job):
            return
        task = asyncio.get_running_loop().create_task(self._run(job))
        self.tasks[job.id] = task
        task.add_done_callback(lambda done: self._finished(job.id, done))

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self.tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("pixy webhooks of job %s stopped", job_id, exc_info=task.exception())

    async def _run(self, job: Job) -> None:
        clock = self.state.clock
        delivered = job.details.setdefault("webhooks_delivered", 0)
        while not job.deleted:
            saves = timeline(job)
            now = clock.now()
            due = applied(saves, now)
            while delivered < due and not job.deleted:
                await self._deliver(job, delivered, render(self.state, job, delivered + 1))
                delivered = job.details["webhooks_delivered"] = delivered + 1
            if due and due == len(saves) and saves[-1].final:
                return
            wait = (saves[due].at - now) / clock.time_scale if due < len(saves) else _WAKE
            await asyncio.sleep(min(max(wait, 0.0), _WAKE))

    async def _deliver(self, job: Job, index: int, item: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_WEBHOOK_TIMEOUT)
        body = {**item, "task_type": TASK_TYPES[job.kind]}
        for url in _targets(job):
            try:
                async with self._session.post(url, json=body) as reply:
                    failure = None if reply.status < 400 else f"HTTP {reply.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                failure = type(exc).__name__
            if failure is not None:
                self._record_failure(job, index, url, failure, item)

    def _record_failure(
        self, job: Job, index: int, url: str, failure: str, item: dict[str, Any]
    ) -> None:
        now = self.state.clock.now()
        entry = {
            "reported_at": naive_iso(self.state.clock.wall(now)),
            "message": f"webhook {url} failed: {failure}",
            "task_status": item["task_status"],
            "duration": int(now - job.created_at),
            "log_type": "webhook_error",
        }
        with self.state.lock:
            job.details["extra_logs"].setdefault(index, []).append(entry)

    async def aclose(self) -> None:
        """Stop every delivery and close the HTTP session."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


_WEBHOOKS: web.AppKey[_Webhooks] = web.AppKey("pollkit_sim_pixy_webhooks", _Webhooks)


# -- handlers ----------------------------------------------------------------------------------


class _VerifyBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    api_key: str


class _ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=10, ge=1, le=100)
    created_at_from: datetime | None = None
    created_at_to: datetime | None = None


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


async def _verify(request: web.Request) -> web.Response:
    body, error = await _json(request)
    if error is not None:
        return error
    checked, error = _validate(_VerifyBody, body)
    if error is not None:
        return error
    assert isinstance(checked, _VerifyBody)
    state = request.app[STATE]
    if not hmac.compare_digest(checked.api_key.encode(), state.api_key.encode()):
        return _detail(401, "Invalid API key")
    return web.json_response({})


def _collection(kind: str) -> _Handler:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        if not _authorized(request, state):
            return _unauthorized()
        if request.method == "POST":
            return await _create(request, state, kind)
        return _list(request, state, kind)

    return handle


async def _create(request: web.Request, state: SimState, kind: str) -> web.Response:
    body, error = await _json(request)
    if error is not None:
        return error
    checked, error = _validate(body_model(kind), body)
    if error is not None:
        return error
    assert checked is not None
    fields = checked.model_dump()
    details: dict[str, Any] = {
        "fields": fields,
        "origin": f"{request.scheme}://{request.host}",
        "extra_logs": {},
    }
    job = state.create_job(
        dialect=DIALECT,
        kind=kind,
        type_=TASK_TYPES[kind],
        outputs=outputs_for(kind, fields, state),
        details=details,
        id_style="uuid",
    )
    with state.lock:
        details["planned"] = job.outcome
        details["created_iso"] = naive_iso(state.clock.wall(job.created_at))
        details["created_dt"] = datetime.fromisoformat(details["created_iso"])
    request.app[_WEBHOOKS].watch(job)
    return web.json_response(render(state, job, 0), status=201)


def _read(state: SimState, job: Job) -> dict[str, Any]:
    """The item as a status read (GET or list) shows it now."""
    item = render(state, job, None)
    if state.shows_unknown_status(job, state.clock.now()):
        item["task_status"] = _UNKNOWN_STATUS
        if "status" in item:
            item["status"] = _UNKNOWN_STATUS
    return item


def _list(request: web.Request, state: SimState, kind: str) -> web.Response:
    try:
        query = _ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return _detail(422, validation_detail(exc, "query"))
    low, high = _naive_utc(query.created_at_from), _naive_utc(query.created_at_to)
    with state.lock:
        mine = [
            (job.details["created_dt"], job.created_at, order, job)
            for order, job in enumerate(state.jobs.values())
            if job.dialect == DIALECT and job.kind == kind and not job.deleted
        ]
    matching = [
        entry
        for entry in mine
        if (low is None or entry[0] >= low) and (high is None or entry[0] <= high)
    ]
    matching.sort(key=lambda entry: entry[:3], reverse=True)
    page = matching[query.offset : query.offset + query.limit]
    items = [_read(state, job) for *_, job in page]
    return web.json_response(
        {"items": items, "total": len(matching), "offset": query.offset, "limit": query.limit}
    )


def _item(kind: str) -> _Handler:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        uid = request.match_info["uid"]
        if not _UUID.match(uid):
            return _detail(404, "Not Found")  # the route's UUID converter did not match
        if request.method == "PATCH" and state.scenario.pixy_update == "disabled":
            return _detail(405, "Method Not Allowed", {"Allow": "GET, DELETE"})
        if not _authorized(request, state):
            return _unauthorized()
        job = state.jobs.get(uid)
        if job is None or job.dialect != DIALECT or job.kind != kind or job.deleted:
            return _not_found(kind)
        if request.method == "DELETE":
            item = render(state, job, None, deleted=True)
            state.delete(job)
            return web.json_response(item)
        if request.method == "PATCH":
            return await _update(request, state, job)
        with state.lock:
            job.status_requests += 1
        return web.json_response(_read(state, job))

    return handle


async def _update(request: web.Request, state: SimState, job: Job) -> web.Response:
    body, error = await _json(request)
    if error is not None:
        return error
    if not isinstance(body, dict):
        detail = [
            {"type": "dict_type", "loc": ["body"], "msg": "Input should be a valid dictionary"}
        ]
        return _detail(422, detail)
    checked, error = _validate(body_model("update"), body)
    if error is not None:
        return error
    assert checked is not None
    fields = job.details["fields"]
    changes = {
        key: getattr(checked, key)
        for key in checked.model_fields_set
        if key in fields or key in ("meta_data", "webhook_url")
    }
    with state.lock:
        fields.update(changes)
        job.details["patched_at"] = state.clock.now()
    request.app[_WEBHOOKS].watch(job)
    return web.json_response(render(state, job, None))


_ANY_ITEM = re.compile(
    "^" + re.escape(PREFIX) + "(" + "|".join(re.escape(p) for p in KINDS) + r")([^/]*)$"
)


async def _unrouted(request: web.Request) -> web.Response:
    """FastAPI's answers for paths and methods no route takes."""
    found = _ANY_ITEM.match(request.path)
    if found is not None and (found.group(2) == "" or _UUID.match(found.group(2))):
        allowed = "GET, POST" if found.group(2) == "" else "GET, DELETE"
        return _detail(405, "Method Not Allowed", {"Allow": allowed})
    return _detail(404, "Not Found")


async def _close_webhooks(app: web.Application) -> None:
    await app[_WEBHOOKS].aclose()


def add_routes(app: web.Application) -> None:
    """Register the dialect's routes on `app` (which holds `STATE` and `FAULTS`)."""
    app[_WEBHOOKS] = _Webhooks(app[STATE])
    app.on_cleanup.append(_close_webhooks)
    app.router.add_post(f"{PREFIX}/api_key/verify", _verify)
    for path, kind in KINDS.items():
        collection = _collection(kind)
        app.router.add_get(f"{PREFIX}{path}", collection, allow_head=False)
        app.router.add_post(f"{PREFIX}{path}", collection)
        item = _item(kind)
        for method in ("GET", "PATCH", "DELETE"):
            app.router.add_route(method, f"{PREFIX}{path}{{uid}}", item)
    app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", _unrouted)
