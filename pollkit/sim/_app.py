"""The aiohttp application: dialect routes, download routes, control routes, faults, stats.

Routes under ``/_sim/`` other than downloads (files, blobs, archives) are the control surface
(stats, plans, faults, cancellation). They need no auth, never fail on purpose and are not
counted in the stats, so that watching the simulator does not change what it reports.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pollkit.sim import _events as events
from pollkit.sim._faults import (
    BODY_FAULTS,
    FAULTS,
    FaultInjector,
    fault_label,
    format_retry_after,
    reason,
)
from pollkit.sim._state import STATE, SimState
from pollkit.sim.flux0 import _routes as flux0
from pollkit.sim.magichour import _routes as magichour
from pollkit.sim.pixy import _routes as pixy
from pollkit.sim.pixyz import _routes as pixyz
from pollkit.sim.transfer import _routes as downloads
from pollkit.sim.transfer._routes import DOWNLOAD_PREFIXES
from pollkit.sim.transfer._serve import abort_connection

__all__ = ["FAULTS", "InjectRequest", "PlanRequest", "build_app", "dialect_urls"]

logger = logging.getLogger("pollkit.sim")

_CONTROL_PREFIX = "/_sim/"


class PlanRequest(BaseModel):
    """Body of ``POST /_sim/plan``; the arguments of `Simulator.plan_next`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: Literal["complete", "error", "canceled", "draft"] | None = "error"
    queue_delay: float | None = Field(default=None, ge=0)
    render_time: float | None = Field(default=None, ge=0)
    count: int = Field(default=1, ge=1)


class InjectRequest(BaseModel):
    """Body of ``POST /_sim/inject``; the arguments of `Simulator.inject`.

    A missing or null `path_prefix` means ``/v1/`` for ``status`` and ``reset`` faults and
    ``/_sim/`` (every download route) for body faults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int = Field(default=500, ge=100, le=599)
    count: int = Field(default=3, ge=1)
    path_prefix: str = "/v1/"
    method: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    kind: Literal["status", "reset", "drop_reply", "truncate", "reset_mid", "stall"] = "status"
    stall_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _default_prefix(cls, data: Any) -> Any:
        # Body faults only ever apply to downloads, so their natural default differs.
        if isinstance(data, dict) and data.get("path_prefix") is None:
            body = data.get("kind") in BODY_FAULTS
            return {**data, "path_prefix": "/_sim/" if body else "/v1/"}
        return data


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    if status in (204, 304) or status < 200:
        return web.Response(status=status, headers=headers)  # these statuses carry no body
    return web.json_response({"message": text}, status=status, headers=headers)


def _route_key(request: web.Request) -> str:
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    return f"{request.method} {template}"


@web.middleware
async def _faults_and_counters(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path.startswith(_CONTROL_PREFIX) and not path.startswith(DOWNLOAD_PREFIXES):
        response: web.StreamResponse = await handler(request)
        return response
    state = request.app[STATE]
    route = _route_key(request)
    fault = request.app[FAULTS].pick(
        request.method, path, allow_random=not path.startswith(_CONTROL_PREFIX)
    )
    if fault is not None and fault.kind == "drop_reply":
        # The request is handled (a job is created and paid for), and its reply is lost.
        state.count_fault(fault_label(fault))
        await handler(request)
        state.count_request(route, "reset", injected=True)
        logger.debug("fault: reply dropped for %s %s", request.method, path)
        abort_connection(request)
        return web.Response(status=500)  # never sent: the connection is already gone
    if fault is not None:
        state.count_fault(fault_label(fault))
        if fault.kind == "reset":
            state.count_request(route, "reset", injected=True)
            logger.debug("fault: reset %s %s", request.method, path)
            abort_connection(request)
            return web.Response(status=500)  # never sent: the connection is already gone
        headers = None
        if fault.retry_after is not None:
            headers = {"Retry-After": format_retry_after(fault.retry_after)}
        state.count_request(route, str(fault.status), injected=True)
        logger.debug("fault: %s for %s %s", fault.status, request.method, path)
        return _message(fault.status, reason(fault.status), headers)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Unknown paths and methods answer in the API's own error shape, not aiohttp's text.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = _message(exc.status, exc.reason, headers)
    state.count_request(route, str(response.status), injected=False)
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="body is not JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body


def _invalid(exc: ValidationError) -> web.Response:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return _message(400, f"{where}: {first['msg']}")


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def _plan(request: web.Request) -> web.Response:
    try:
        plan = PlanRequest.model_validate(await _json_body(request))
    except ValidationError as exc:
        return _invalid(exc)
    except web.HTTPBadRequest as exc:
        return _message(400, exc.reason)
    request.app[STATE].plan(plan.outcome, plan.queue_delay, plan.render_time, plan.count)
    return web.json_response({"planned": plan.model_dump()})


async def _inject(request: web.Request) -> web.Response:
    try:
        rule = InjectRequest.model_validate(await _json_body(request))
        request.app[FAULTS].add(**rule.model_dump())
    except ValidationError as exc:
        return _invalid(exc)
    except (ValueError, web.HTTPBadRequest) as exc:
        return _message(400, exc.reason if isinstance(exc, web.HTTPBadRequest) else str(exc))
    return web.json_response({"injected": rule.model_dump()})


async def _cancel(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    try:
        status = request.app[STATE].cancel(job_id)
    except KeyError:
        return _message(404, "Not Found")
    return web.json_response({"id": job_id, "status": status})


def build_app(state: SimState, faults: FaultInjector) -> web.Application:
    """The simulator's aiohttp application.

    Args:
        state: Jobs, files and counters to serve.
        faults: Decides which requests fail on purpose.
    """
    app = web.Application(middlewares=[_faults_and_counters])
    app[STATE] = state
    app[FAULTS] = faults
    magichour.add_routes(app)
    pixy.add_routes(app)
    pixyz.add_routes(app)
    flux0.add_routes(app)
    downloads.add_routes(app)
    events.add_routes(app)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/plan", _plan)
    app.router.add_post("/_sim/inject", _inject)
    app.router.add_post("/_sim/jobs/{id}/cancel", _cancel)
    return app


def dialect_urls(origin: str) -> dict[str, str]:
    """Each dialect's base URL on a simulator serving at `origin` (no trailing slash)."""
    return {
        magichour.DIALECT: origin,
        pixy.DIALECT: f"{origin}{pixy.PREFIX}",
        pixyz.DIALECT: f"{origin}{pixyz.PREFIX}",
        flux0.DIALECT: f"{origin}{flux0.PREFIX}",
    }
