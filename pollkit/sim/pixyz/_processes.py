"""The PiXYZ simulator's processes and job phases (docs/apis/pixyz.md#job-phases), without HTTP.

`PROCESSES` lists the built-in processes in directory order (``__init__`` included, as the
real process directory has one); `plan_process` turns a validated submission into what the
job will do (steps, result, output files); `phase` tells what a job looks like at a simulated
instant: native status, progress, steps, result and times.

Timeline of a job (simulated seconds, from `pollkit.sim._state.Job`): ``PENDING`` until the
queue delay is over, then ``STARTED`` for the first tenth of the render time, then ``RUNNING``
with the declared steps announced at equal intervals, then the outcome at ``finishes_at``:
``SUCCESS`` (complete), ``FAILURE`` (error) or ``REVOKED`` (canceled); ``draft`` jobs stay
``PENDING`` forever.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pollkit.sim._state import Job, OutputSpec
from pollkit.sim.transfer._files import make_png

__all__ = [
    "MARKER",
    "PROCESSES",
    "STUCK_STATUSES",
    "Phase",
    "ProcessPlan",
    "metadata_counters",
    "phase",
    "plan_process",
]

#: Built-in processes, in the order ``GET /processes`` lists them.
PROCESSES: tuple[str, ...] = (
    "__init__",
    "api_test",
    "convert_file",
    "generate_metadata",
    "generate_thumbnails",
    "sleep",
    "thumbnail_chained",
)

#: Native statuses a custom script can pin a job in forever (``# pollkit-sim: stuck=RETRY``).
STUCK_STATUSES = frozenset({"PENDING", "RECEIVED", "STARTED", "RETRY", "REJECTED", "UNKNOWN"})

#: The comment that scripts a custom job's simulated behaviour.
MARKER = re.compile(r"#\s*pollkit-sim:\s*(.*)$", re.MULTILINE)

_OUTCOMES = {"success": "complete", "failure": "error", "revoked": "canceled", "pending": "draft"}

# The reply of ``GET /processes/{name}`` is built from the docstring of the script's ``main``
# (``ast.get_docstring``, so cleaned of indentation). Upstream's ``convert_file`` and ``sleep``
# have none, and the real server then formats ``None`` into the text: None here means the same.
# These are the exact reply strings of pixyz-scheduler's ``pixyz_api/process/*.py``.
_THUMBS_PARAMS = (
    "Parameters\n{\n"
    "'width': 1920, [optional] output images width (default: 512)\n"
    "'height': 1080, [optional] output images height (default: 512)\n}"
)
DOCS: dict[str, str | None] = {
    "api_test": "Test the PixyzScheduler API by returning a simple string",
    "convert_file": None,
    "generate_metadata": (
        "Generate metadata for a model.\n\nOutputs a metadata.json file in the output directory "
        "and returns the metadata as a dictionary."
    ),
    # Upstream's closing brace is followed by a space, which the docstring cleaning keeps.
    "generate_thumbnails": (
        "Generate png thumbnails [iso,x,y,z], preview.glb and metadata.json for the given file"
        f"\n\n{_THUMBS_PARAMS} "
    ),
    "sleep": None,
    "thumbnail_chained": (
        "Generate png thumbnails [iso,x,y,z], preview.glb and metadata.json for the given file: "
        "DAG version -> CPU task (load, metadata, glb, export to GLB) -> GPU task (screenshot)"
        f"\n\n{_THUMBS_PARAMS}"
    ),
}

_THUMB_STEPS = (
    "Importing file {file}",
    "Repairing the scene",
    "Tessellating",
    "Computing metadata",
    "Centering the camera",
    "Rendering iso view",
    "Rendering x view",
    "Rendering y view",
    "Rendering z view",
    "Exporting preview.glb",
    "Writing metadata.json",
    "done",
)
_COUNTERS = (
    "part_count",
    "material_count",
    "brep_boundary",
    "brep_body_count",
    "mesh_boundary",
    "mesh_edge_count",
    "mesh_vertex_count",
    "polygon_count",
    "animation_count",
    "variant_count",
    "pmi_component_count",
    "annotation_group_count",
    "annotation_count",
    "metadata_component_count",
    "metadata_property_count",
)


class ProcessError(ValueError):
    """A submission the server refuses with 400; the text is the envelope's `details`."""


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """What a submitted job will do.

    Attributes:
        process: The process name.
        steps: The texts of the declared steps, in order.
        result: What `result` holds on SUCCESS.
        outputs: Its output files.
        outcome: A forced outcome (a custom script's marker, or invalid params), else None.
        stuck: A native status the job is pinned in forever, else None.
        queue_delay: Forced simulated queue time, else None.
        render_time: Forced simulated render time, else None.
        error: The short error of a FAILURE.
    """

    process: str
    steps: tuple[str, ...]
    result: dict[str, Any]
    outputs: tuple[OutputSpec, ...] = ()
    outcome: str | None = None
    stuck: str | None = None
    queue_delay: float | None = None
    render_time: float | None = None
    error: str = "Task process exited with error"


@dataclass(frozen=True, slots=True)
class Phase:
    """A job as the server sees it at one instant.

    Attributes:
        status: The native status.
        progress: 0–100 or None.
        steps: The step records, or None.
        result: ``"None"``, ``{}``, the script's dict or the exception text.
        request: Simulated time of the request, when shown.
        started: Simulated time the worker started, when shown.
        stopped: Simulated time it ended, when shown.
        named: Whether reads show the job's alias.
    """

    status: str
    progress: int | None = None
    steps: list[dict[str, Any]] | None = None
    result: Any = "None"
    request: float | None = None
    started: float | None = None
    stopped: float | None = None
    named: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def metadata_counters(file_name: str, size: int) -> dict[str, Any]:
    """The 16 metadata counters of an input file: deterministic from its name and size."""
    seed = _digest("pixyz-metadata", file_name, size)
    values: dict[str, Any] = {"aabb": f"{100 + seed[0] + seed[1] / 256:.6f}"}
    for index, name in enumerate(_COUNTERS):
        values[name] = int.from_bytes(seed[index * 2 : index * 2 + 2], "big") % 5000
    return values


def _json_bytes(payload: Any, _key: bytes) -> bytes:
    return json.dumps(payload, indent=4).encode()


def _glb(_key: bytes) -> bytes:
    """A minimal glTF 2.0 binary: header and one JSON chunk describing an empty scene."""
    body = json.dumps({"asset": {"version": "2.0", "generator": "pollkit.sim"}}).encode()
    body += b" " * (-len(body) % 4)
    chunk = struct.pack("<I4s", len(body), b"JSON") + body
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunk)) + chunk


def _placeholder(label: str, key: bytes) -> bytes:
    return f"pollkit.sim placeholder: {label}\n".encode() + hashlib.sha256(key).digest() * 16


def _png(width: int, height: int, key: bytes) -> bytes:
    return make_png(width, height, key)


def _dimension(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name, 512)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    return int(value) if 1 <= value <= 8192 else None


def _script_marker(script: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in MARKER.finditer(script):
        for item in match.group(1).split():
            key, _, value = item.partition("=")
            found[key.strip()] = value.strip()
    return found


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _custom(params: dict[str, Any], entrypoint: str, script: str) -> ProcessPlan:
    marker = _script_marker(script)
    total = int(marker["steps"]) if marker.get("steps", "").isdigit() else 3
    names = [n for n in marker.get("outputs", "").split(",") if n]
    outputs = tuple(
        OutputSpec(
            "bin", "application/octet-stream", name=n, make=functools.partial(_placeholder, n)
        )
        for n in names
    )
    stuck = marker.get("stuck", "").upper() or None
    return ProcessPlan(
        process="custom",
        steps=tuple(f"Step {i + 1}/{max(total, 1)}" for i in range(max(total, 1))),
        result={"entrypoint": entrypoint, "params": params, "outputs": names},
        outputs=outputs,
        outcome=_OUTCOMES.get(marker.get("outcome", "").lower()),
        stuck=stuck if stuck in STUCK_STATUSES else None,
        queue_delay=_seconds(marker.get("queue")),
        render_time=_seconds(marker.get("render")),
    )


def plan_process(
    process: str,
    params: dict[str, Any],
    *,
    file_name: str | None,
    file_size: int,
    entrypoint: str,
    script: str | None,
) -> ProcessPlan:
    """What a job of `process` does with these params and input.

    Raises:
        ProcessError: The process does not exist (400 ``Invalid process '<name>'``).
    """
    if process == "custom":
        return _custom(params, entrypoint, script or "")
    if process not in PROCESSES or process == "__init__":
        raise ProcessError(f"Invalid process '{process}'")
    source = file_name or "input"
    metadata = metadata_counters(source, file_size)
    missing_input = file_name is None
    if process == "api_test":
        return ProcessPlan(
            process, ("API tested successfully!",), {"output": "Hello World!", "params": params}
        )
    if process == "sleep":
        raw = params.get("duration", 0.1)
        duration = (
            float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else 0.1
        )
        return ProcessPlan(process, (f"Sleeping for {duration} seconds",), {"sleep": duration})
    if process == "convert_file":
        ext = str(params.get("extension", "pxz")).lower()
        name = f"output.{ext}"
        make = _glb if ext == "glb" else functools.partial(_placeholder, name)
        return ProcessPlan(
            process,
            (f"Importing file {source}", f"Exporting file to {name}", "done"),
            {"output": name},
            (OutputSpec(ext, "application/octet-stream", name=name, make=make),),
            outcome="error" if missing_input else None,
        )
    meta_file = OutputSpec(
        "json",
        "application/json",
        name="metadata.json",
        make=functools.partial(_json_bytes, metadata),
    )
    if process == "generate_metadata":
        return ProcessPlan(
            process,
            (f"Importing file {source}", "Computing metadata", "done"),
            {"metadata": metadata},
            (meta_file,),
            outcome="error" if missing_input else None,
        )
    chained = process == "thumbnail_chained"
    width = 512 if chained else _dimension(params, "width")
    height = 512 if chained else _dimension(params, "height")
    valid = width is not None and height is not None
    w, h = (width or 1, height or 1)
    views = ("iso", "x", "y", "z")
    pngs = tuple(
        OutputSpec("png", "image/png", name=f"{v}.png", make=functools.partial(_png, w, h))
        for v in views
    )
    preview = OutputSpec("glb", "model/gltf-binary", name="preview.glb", make=_glb)
    if chained:
        export = OutputSpec(
            "pxz", "application/octet-stream", name="export.pxz",
            make=functools.partial(_placeholder, "export.pxz"),
        )  # fmt: skip
        result: dict[str, Any] = {
            "metadata": metadata,
            "preview": "preview.glb",
            "screenshots": [f"{v}.png" for v in views],
        }
        files = (preview, meta_file, export, *pngs)
    else:
        result = {
            "thumbs": {v: f"{v}.png" for v in views},
            "preview": {"file": "preview.glb", "size": f"{w}x{h}"},
            "metadata": metadata,
            "process_duration": 0.0,  # filled in with the render time at creation
        }
        files = (*pngs, preview, meta_file)
    return ProcessPlan(
        process,
        tuple(s.format(file=source) for s in _THUMB_STEPS),
        result,
        files,
        outcome="error" if missing_input or not valid else None,
        error="Pixyz Internal error" if not valid else "Task process exited with error",
    )


def _native_stuck(job: Job, now: float) -> str | None:
    stuck = job.details.get("stuck")
    if stuck is None or now < job.created_at + job.queue_delay:
        return None
    return str(stuck)


def phase(job: Job, now: float) -> Phase:
    """What `job` looks like at simulated time `now` (docs/apis/pixyz.md#job-phases)."""
    generic = job.status(now)
    steps_text: tuple[str, ...] = job.details["steps"]
    total = len(steps_text)
    picked = job.created_at + job.queue_delay
    stuck = _native_stuck(job, now)
    if stuck is not None and generic != "canceled":
        if stuck == "PENDING":
            return Phase("PENDING")
        return Phase(stuck, steps=[] if stuck == "STARTED" else None, result={})
    if generic in ("queued", "draft"):
        return Phase("PENDING")
    if generic == "canceled":
        return Phase("REVOKED", result="TaskRevokedError: revoked", stopped=job.finished_at(now))
    if generic == "error":
        return Phase(
            "FAILURE",
            result=f"ProcessError: {job.details['error']}",
            stopped=job.finished_at(now),
        )
    run_from = picked + job.render_time * 0.1
    step_length = (job.finishes_at - run_from) / max(total, 1)
    if generic == "complete":
        steps = [{"duration": round(step_length, 3), "info": text} for text in steps_text]
        return Phase(
            "SUCCESS",
            progress=100,
            steps=steps,
            result=job.details["result"],
            request=job.created_at,
            started=picked,
            stopped=job.finishes_at,
            named=True,
        )
    if now < run_from:
        return Phase("STARTED", steps=[], result={})
    announced = min(total, int((now - run_from) / step_length) + 1) if step_length > 0 else total
    steps = [{"duration": round(step_length, 3), "info": t} for t in steps_text[: announced - 1]]
    steps.append({"duration": -1, "info": steps_text[announced - 1]})
    return Phase(
        "RUNNING",
        progress=math.floor(100 * (announced - 1) / total),
        steps=steps,
        result={},
        request=job.created_at,
        started=picked,
        named=True,
    )
