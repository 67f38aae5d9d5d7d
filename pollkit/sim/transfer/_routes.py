"""Download routes: signed output files, blobs of any size and hostile archives.

All three go through `transfer.serve`, so ``Range``, ``If-Range``, ``HEAD`` and the scenario's
download switches and body faults behave the same on each. Blobs and archives need neither
auth nor a signature: they exist for benchmarks and for tests of a client's download engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from aiohttp import web

from pollkit.sim._faults import FAULTS, Fault
from pollkit.sim._state import STATE, SimState
from pollkit.sim.transfer._archives import ARCHIVE_KINDS, archive_info, build_archive
from pollkit.sim.transfer._blobs import blob_chunks, blob_etag
from pollkit.sim.transfer._serve import Delivery, Entity, bytes_entity, serve

__all__ = ["DOWNLOAD_PREFIXES", "add_routes"]

#: Path prefixes of the routes whose bodies the download switches and body faults apply to.
DOWNLOAD_PREFIXES: tuple[str, ...] = ("/_sim/files/", "/_sim/blobs/", "/_sim/archives/")

# A blob larger than this is surely a typo in a benchmark (it would stream for hours).
_MAX_BLOB = 1 << 40


def _message(status: int, text: str) -> web.Response:
    return web.json_response({"message": text}, status=status)


def _delivery(request: web.Request, on_bytes: Callable[[int], None]) -> Delivery:
    state = request.app[STATE]
    faults = request.app[FAULTS]
    scenario = state.scenario
    method, path = request.method, request.path

    def pick_fault() -> Fault | None:
        return faults.pick_body(method, path)

    def on_fault(fault: Fault) -> None:
        state.count_download_fault(fault.kind)

    def pick_slowdown() -> float | None:
        slow = faults.pick_slow()
        if slow is not None:
            state.count_fault("slow")
        return slow

    return Delivery(
        range_support=scenario.range_support,
        generation=state.next_generation() if scenario.etag_changes else None,
        bandwidth=scenario.bandwidth,
        pick_fault=pick_fault,
        pick_slowdown=pick_slowdown,
        on_fault=on_fault,
        on_bytes=on_bytes,
    )


async def _file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # Checked once, when the request starts: a transfer already under way when the URL
    # expires still finishes, as with real signed URLs.
    refusal = state.check_signature(
        request.path, request.query.get("expires"), request.query.get("sig")
    )
    if refusal == "expired":
        state.count_fault("url_expired")
        return _message(403, "Request has expired")
    if refusal is not None:
        return _message(403, "Signature does not match")
    job = state.jobs.get(request.match_info["job_id"])
    now = state.clock.now()
    finished = job.finished_at(now) if job is not None else None
    if job is None or job.deleted or job.status(now) != "complete" or finished is None:
        return _message(404, "Not Found")
    name = request.match_info["name"]
    output = next((o for o in job.outputs if o.name == name), None)
    if output is None:
        return _message(404, "Not Found")
    with state.lock:
        job.download_requests += 1
    info, data = state.file_data(job, output)
    entity = bytes_entity(
        data, etag=info.etag, media_type=info.media_type, modified_at=state.clock.wall(finished)
    )
    return await serve(request, entity, _delivery(request, state.count_file_bytes))


def _integer(raw: str | None, label: str) -> int:
    text = (raw or "").strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit():
        raise ValueError(f"{label} must be an integer, got {raw!r}")
    return int(text)


def _blob_entity(state: SimState, name: str, size: int, seed: int) -> Entity:
    def read(start: int, end: int) -> Iterator[bytes]:
        return blob_chunks(size, seed, start, end)

    return Entity(
        size=size,
        etag=blob_etag(size, seed),
        modified_at=state.clock.wall_start,
        media_type="application/octet-stream",
        read=read,
        filename=name,
    )


async def _blob(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        size = _integer(request.query.get("size"), "size")
        seed = _integer(request.query.get("seed", "0"), "seed")
    except ValueError as exc:
        return _message(400, str(exc))
    if not 0 <= size <= _MAX_BLOB:
        return _message(400, f"size must be between 0 and {_MAX_BLOB}, got {size}")
    entity = _blob_entity(state, request.match_info["name"], size, seed)
    return await serve(request, entity, _delivery(request, state.count_blob_bytes))


async def _archive(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    name = request.match_info["name"]
    kind = name.removesuffix(".zip")
    if kind == name or kind not in ARCHIVE_KINDS:
        return _message(404, "Not Found")
    # The first build of the big ones takes a few hundred milliseconds of zlib, which
    # releases the GIL: build in a thread so other requests go on meanwhile.
    info = await asyncio.get_running_loop().run_in_executor(None, archive_info, kind)
    entity = bytes_entity(
        build_archive(kind),
        etag=info.etag,
        media_type="application/zip",
        modified_at=state.clock.wall_start,
        filename=name,
    )
    return await serve(request, entity, _delivery(request, state.count_archive_bytes))


def add_routes(app: web.Application) -> None:
    """Register the download routes (GET, and HEAD with it) on `app`.

    `app` must hold `STATE` and `FAULTS`.
    """
    app.router.add_get("/_sim/files/{job_id}/{name}", _file)
    app.router.add_get("/_sim/blobs/{name}", _blob)
    app.router.add_get("/_sim/archives/{name}", _archive)
