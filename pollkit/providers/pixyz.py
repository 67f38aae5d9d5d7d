"""The PiXYZ Scheduler REST API: Pixyz processes run as jobs on a shared worker pool.

A spec names a process and carries what ``POST /jobs`` takes as multipart form fields::

    {"process": "convert_file", "file": "bracket.step", "params": {"extension": "glb"},
     "name": "bracket", "config": {"queue": "cpu"}}

``script`` (a path) is required when ``process`` is ``custom`` (the default). Files are checked
before anything is sent and streamed from disk when it is.

Besides jobs, this module builds the requests of every other route (processes, details,
outputs, archive, backend task meta, the dev callback, Prometheus metrics) and parses their
replies; `pollkit.client._pixyz.PixyzClient` sends them.

Quirks handled here (docs/apis/pixyz.md): ``SENT`` only answers the POST; an unknown or expired
uuid reads ``PENDING`` forever, so a wait on a wrong id ends at its deadline with a hint that
the id may be wrong; ``GET /jobs`` (used for batch polling) lists internal packaging tasks and
has no record of queued jobs, which therefore read ``PENDING``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ValidationError

from pollkit.core.naming import name_field
from pollkit.errors import ConfigurationError, ProtocolError
from pollkit.models import ErrorInfo, JobState, Output, Status
from pollkit.providers.base import FormPart, Provider, Request, Response, Submission, setting

__all__ = ["DEFAULT_BASE_URL", "Pixyz", "parse_metrics"]

DEFAULT_BASE_URL = "http://127.0.0.1:8001"

#: docs/apis/pixyz.md#status-map. Anything else (``UNKNOWN`` too) is non-terminal, logged once.
STATUSES: dict[str, Status] = {
    "SENT": Status.QUEUED,
    "PENDING": Status.QUEUED,
    "RECEIVED": Status.QUEUED,
    "RETRY": Status.QUEUED,
    "REJECTED": Status.QUEUED,
    "STARTED": Status.RENDERING,
    "RUNNING": Status.RENDERING,
    "SUCCESS": Status.COMPLETE,
    "FAILURE": Status.ERROR,
    "REVOKED": Status.CANCELED,
}

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_SPEC_KEYS = frozenset({"process", "file", "script", "params", "name", "config"})
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

OutputsMode = Literal["files", "archive"]


class _JobState(BaseModel):
    """The five keys of a PiXYZ JobState; details add more, kept in `JobState.raw`."""

    uuid: str
    name: str | None = None
    status: str
    progress: float | None = None
    error: str | None = None


def _readable(path: Any, field: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigurationError(f"pixyz spec: {field}: must be a file path")
    resolved = Path(path)
    if not resolved.is_file():
        raise ConfigurationError(f"pixyz spec: {field}: no such file {os.fspath(path)!r}")
    if not os.access(resolved, os.R_OK):
        raise ConfigurationError(f"pixyz spec: {field}: cannot read {os.fspath(path)!r}")
    return resolved


def _json_object(spec: Mapping[str, Any], field: str) -> str | None:
    value = spec.get(field)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"pixyz spec: {field}: must be an object, got {type(value).__name__}"
        )
    try:
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"pixyz spec: {field}: not JSON-serialisable: {exc}") from exc


def _encode_path(path: str) -> str:
    """The path for a URL. A dot segment would be normalised away by the client (reaching
    another route), so such a path is sent as one segment with its slashes encoded."""
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return quote(path, safe="")
    return "/".join(quote(s, safe="") for s in segments)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a Prometheus text exposition, by metric name.

    Args:
        text: The body of ``GET /metrics``.

    Returns:
        For each metric name, its samples as ``(labels, value)``.

    Raises:
        ProtocolError: A sample line cannot be read.
    """
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _METRIC.match(line.strip())
        if match is None:
            raise ProtocolError(f"metrics line {number} is not a sample", operation="metrics")
        name, _, labels, value = match.groups()
        try:
            number_value = float(value)
        except ValueError as exc:
            raise ProtocolError(
                f"metrics line {number}: bad value {value!r}", operation="metrics"
            ) from exc
        pairs = dict(_LABEL.findall(labels or ""))
        samples.setdefault(name, []).append((pairs, number_value))
    return samples


class Pixyz(Provider):
    """The PiXYZ Scheduler API.

    Args:
        api_key: The shared key, sent as ``x-api-key``; default: ``$PIXYZ_API_KEY``.
        base_url: Where the API lives (the simulator's ``sim.urls["pixyz"]`` in tests);
            default: ``$PIXYZ_BASE_URL``, else ``http://127.0.0.1:8001``.
        outputs: How a finished job's outputs are downloaded: ``"files"`` (one `Output` per
            name ``GET /jobs/{uuid}/outputs`` lists) or ``"archive"`` (one zip of them all,
            which the server packs on the first request and answers 425 for until packed).
        poll_details: Poll ``/jobs/{uuid}/details`` (steps, and the traceback as error)
            instead of the lighter ``/jobs/{uuid}``.

    Raises:
        ConfigurationError: The key is empty, the URL is not http(s) or `outputs` is unknown.
    """

    name = "pixyz"
    #: ``GET /jobs`` answers for every job at once.
    batch_status_limit = 1000

    #: The environment variables read for settings that were not passed.
    ENV_API_KEY = "PIXYZ_API_KEY"
    ENV_BASE_URL = "PIXYZ_BASE_URL"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        outputs: OutputsMode = "files",
        poll_details: bool = False,
    ) -> None:
        super().__init__()
        api_key = setting(api_key, self.ENV_API_KEY)
        base_url = setting(base_url, self.ENV_BASE_URL, DEFAULT_BASE_URL)
        if not api_key or not api_key.strip():
            raise ConfigurationError(f"pixyz: no API key (pass api_key= or set {self.ENV_API_KEY})")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"pixyz: base_url must be http(s), got {base_url!r}")
        if outputs not in ("files", "archive"):
            raise ConfigurationError(
                f"pixyz: outputs must be 'files' or 'archive', not {outputs!r}"
            )
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.outputs = outputs
        self.poll_details = poll_details

    @property
    def secrets(self) -> Sequence[str]:
        """The API key."""
        return (self._api_key,)

    # -- requests ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, operation: str, *, auth: bool = True, **kwargs: Any
    ) -> Request:
        headers = {"Accept": "application/json"}
        if auth:
            headers["x-api-key"] = self._api_key
        return Request(method, f"{self.base_url}{path}", operation, headers=headers, **kwargs)

    @staticmethod
    def check_job_id(job_id: str) -> str:
        """`job_id` if it is a well-formed uuid (the server answers 400 otherwise).

        Raises:
            ConfigurationError: It is not.
        """
        if not isinstance(job_id, str) or not _UUID.match(job_id):
            raise ConfigurationError(f"pixyz: job id must be a uuid, got {job_id!r}")
        return job_id

    def submit_request(self, spec: Mapping[str, Any]) -> Request:
        """``POST /jobs`` as multipart: process, params, config, name, file and script.

        Raises:
            ConfigurationError: Naming the bad field: an unknown key, a missing or unreadable
                file, a custom process without a script, params or config not an object.
        """
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"pixyz spec must be a mapping, got {type(spec).__name__}")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise ConfigurationError(f"pixyz spec: unknown key {unknown[0]!r}")
        process = spec.get("process", "custom")
        if not isinstance(process, str) or not process.strip():
            raise ConfigurationError("pixyz spec: process: must name a process")
        parts = [FormPart("process", value=process)]
        params = _json_object(spec, "params")
        parts.append(FormPart("params", value=params if params is not None else "{}"))
        config = _json_object(spec, "config")
        if config is not None:
            parts.append(FormPart("config", value=config))
        name = spec.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise ConfigurationError("pixyz spec: name: must be a string")
            parts.append(FormPart("name", value=name))
        if spec.get("file") is not None:
            parts.append(FormPart("file", path=_readable(spec["file"], "file")))
        if process == "custom":
            if spec.get("script") is None:
                raise ConfigurationError("pixyz spec: script: required when process is 'custom'")
            script = _readable(spec["script"], "script")
            parts.append(FormPart("script", path=script, content_type="text/plain"))
        return self._request("POST", "/jobs", f"submit {process}", form=tuple(parts))

    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """``GET /jobs/{uuid}`` (or ``/details`` with ``poll_details``)."""
        path = f"/jobs/{self.check_job_id(job_id)}"
        if self.poll_details:
            return [self.details_request(job_id)]
        return [self._request("GET", path, "get job", job_id=job_id)]

    def details_request(self, job_id: str) -> Request:
        """``GET /jobs/{uuid}/details``: steps, times, retries, result, traceback."""
        path = f"/jobs/{self.check_job_id(job_id)}/details"
        return self._request("GET", path, "get job details", job_id=job_id)

    def batch_status_request(self, job_ids: Sequence[str]) -> Request:
        """``GET /jobs``: every job the backend knows, in one reply."""
        return self._request("GET", "/jobs", "list jobs", job_ids=frozenset(job_ids))

    def jobs_request(self) -> Request:
        """``GET /jobs`` (see `parse_jobs`)."""
        return self._request("GET", "/jobs", "list jobs")

    def processes_request(self) -> Request:
        """``GET /processes`` (no key)."""
        return self._request("GET", "/processes", "list processes", auth=False)

    def process_doc_request(self, process: str) -> Request:
        """``GET /processes/{name}`` (no key).

        Raises:
            ConfigurationError: The name is empty or has a slash.
        """
        if not process or "/" in process:
            raise ConfigurationError(f"pixyz: invalid process name {process!r}")
        path = f"/processes/{quote(process, safe='')}"
        return self._request("GET", path, f"get process {process}", auth=False)

    def outputs_list_request(self, job_id: str) -> Request:
        """``GET /jobs/{uuid}/outputs``: the names in the job's outputs directory."""
        path = f"/jobs/{self.check_job_id(job_id)}/outputs"
        return self._request("GET", path, "list outputs", job_id=job_id)

    def task_meta_request(self, job_id: str) -> Request:
        """``GET /backend/get_task_meta/{uuid}``: the raw backend record."""
        path = f"/backend/get_task_meta/{self.check_job_id(job_id)}"
        return self._request("GET", path, "get task meta", job_id=job_id)

    def callback_request(self, payload: Mapping[str, Any]) -> Request:
        """``POST /dev/callback`` with a JSON object (no key; the server echoes it to its log)."""
        if not isinstance(payload, Mapping):
            raise ConfigurationError("pixyz: the callback payload must be a JSON object")
        return self._request(
            "POST", "/dev/callback", "dev callback", auth=False, json_body=dict(payload)
        )

    def metrics_request(self) -> Request:
        """``GET /metrics`` (no key; Prometheus text)."""
        request = self._request("GET", "/metrics", "metrics", auth=False)
        return Request(
            request.method, request.url, request.operation, headers={"Accept": "text/plain"}
        )

    def welcome_request(self) -> Request:
        """``GET /`` (no key): the server's welcome line, with its version."""
        return self._request("GET", "/", "welcome", auth=False)

    # -- tags: finding the job of a submit whose reply was lost ------------------------------

    #: ``GET /jobs`` lists no queued job, and shows a job's name only from ``RUNNING`` on.
    lists_new_jobs = False

    def submit_tag(self, spec: Mapping[str, Any], key: str) -> str | None:
        """The job's ``name``: the spec's own, else the journal key pollkit sets as the name."""
        name = spec.get("name")
        return name if isinstance(name, str) and name else key

    def tagged(self, spec: Mapping[str, Any], tag: str) -> Mapping[str, Any]:
        """`spec` with ``name`` set to `tag`, unless it names the job itself."""
        if spec.get("name"):
            return spec
        return {**spec, "name": tag}

    def tag_lookup_request(self) -> Request:
        """``GET /jobs``: every job the backend holds, with its ``name``."""
        return self.jobs_request()

    def find_tagged(self, response: Response, tags: Collection[str]) -> dict[str, list[str]]:
        """The uuids listed under each name in `tags` (packaging tasks have none)."""
        found: dict[str, list[str]] = {tag: [] for tag in tags}
        for job in self.parse_jobs(response):
            name, uuid = job.get("name"), job.get("uuid")
            if isinstance(name, str) and name in found and isinstance(uuid, str):
                found[name] += [uuid] if _UUID.match(uuid) else []
        return found

    # -- outputs ----------------------------------------------------------------------------

    def output_file(self, job_id: str, path: str, index: int = 0) -> Output:
        """The `Output` for one file of a job's outputs directory (``path`` may hold ``/``).

        The name is sent percent-encoded, so that ``..`` cannot reach another route; the
        server refuses paths that leave the job directory (400).
        """
        self.check_job_id(job_id)
        try:
            url: str | None = f"{self.base_url}/jobs/{job_id}/outputs/{_encode_path(path)}"
        except UnicodeEncodeError:  # a lone surrogate: no URL can name the file
            url = None
        if path in (".", ".."):
            url = None  # no file can have this name; clients would normalise it away
        return Output(
            url=url,
            index=index,
            name=path,
            path=path,
        )

    def archive_output(self, job_id: str) -> Output:
        """The zip of every output of a job (425 until the server has packed it)."""
        self.check_job_id(job_id)
        return Output(
            url=f"{self.base_url}/jobs/{job_id}/outputs/archive",
            name=f"{job_id}.zip",
            media_type="application/zip",
            is_archive=True,
        )

    def outputs_request(self, state: JobState) -> Request | None:
        """``GET /jobs/{uuid}/outputs`` in ``files`` mode (None in ``archive`` mode)."""
        if self.outputs == "archive":
            return None
        return self.outputs_list_request(state.job_id)

    def parse_outputs(self, response: Response, state: JobState) -> JobState:
        """`state` with one `Output` per listed name."""
        names = self.parse_output_names(response)
        outputs = tuple(self.output_file(state.job_id, n, i) for i, n in enumerate(names))
        return JobState(
            provider=state.provider,
            job_id=state.job_id,
            status=state.status,
            native_status=state.native_status,
            observed_at=state.observed_at,
            progress=state.progress,
            outputs=outputs,
            error=state.error,
            kind=state.kind,
            raw=state.raw,
        )

    def download_headers(self, url: str) -> Mapping[str, str]:
        """The key, for URLs under `base_url` only (redirects are then not followed)."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        same_origin = (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)
        if same_origin and (theirs.path + "/").startswith(ours.path.rstrip("/") + "/"):
            return {"x-api-key": self._api_key}
        return {}

    def timeout_hint(self, state: JobState | None) -> str | None:
        """For a job still ``PENDING``: PiXYZ reads unknown and expired ids that way."""
        if state is None or state.native_status in ("PENDING", "SENT"):
            return (
                "PiXYZ answers PENDING for unknown and expired jobs too: the job id may be "
                "wrong, or the job expired"
            )
        return None

    def name_fields(self, state: JobState) -> dict[str, str]:
        """``{alias}``: the job's name (or its uuid), fit for a file name."""
        return {"alias": name_field(state.raw.get("name") or state.job_id)}

    # -- replies ----------------------------------------------------------------------------

    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        """The new job's uuid (the reply's status is always ``SENT``)."""
        payload = response.json()
        job_id = payload.get("uuid") if isinstance(payload, Mapping) else None
        if not isinstance(job_id, str) or not _UUID.match(job_id):
            raise ProtocolError(
                "create reply has no job uuid", operation=response.request.operation
            )
        return Submission(job_id, None, observed_at, payload)

    def _state(
        self,
        payload: Any,
        observed_at: datetime,
        previous: JobState | None,
        operation: str,
        asked: str | None,
    ) -> JobState:
        try:
            job = _JobState.model_validate(payload)
        except ValidationError as exc:
            raise ProtocolError(
                f"job reply does not fit the schema: {exc.errors()[0]['msg']}",
                operation=operation,
                job_id=asked,
            ) from exc
        if not _UUID.match(job.uuid) or (asked is not None and job.uuid.lower() != asked.lower()):
            raise ProtocolError(
                f"job reply is not about this job: uuid {job.uuid[:40]!r}",
                operation=operation,
                job_id=asked,
            )
        if previous is not None and previous.is_terminal:
            return previous  # terminal states are sticky (an expired job reads PENDING again)
        status = STATUSES.get(job.status)
        if status is None:
            self.log_unknown_status(job.status, job.uuid)
            status = previous.status if previous is not None else Status.QUEUED
        error = None
        if status is Status.ERROR:
            lines = (job.error or "").strip().splitlines()  # a traceback: its last line says why
            error = ErrorInfo(None, lines[-1] if lines else "the job failed")
        progress = None
        if job.progress is not None and math.isfinite(job.progress):
            progress = min(max(job.progress / 100.0, 0.0), 1.0)
        outputs: tuple[Output, ...] = ()
        if status is Status.COMPLETE and self.outputs == "archive":
            outputs = (self.archive_output(job.uuid),)
        return JobState(
            provider=self.name,
            job_id=job.uuid,
            status=status,
            native_status=job.status,
            observed_at=observed_at,
            progress=progress,
            outputs=outputs,
            error=error,
            raw=payload,
        )

    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """Map a JobState (or JobDetails) reply onto a `JobState` (docs/apis/pixyz.md)."""
        request = response.request
        return self._state(
            response.json(), observed_at, previous, request.operation, request.job_id
        )

    def parse_details(self, response: Response, observed_at: datetime) -> JobState:
        """A ``/details`` reply as a `JobState`; steps, times and result stay in ``raw``."""
        request = response.request
        return self._state(response.json(), observed_at, None, request.operation, request.job_id)

    def parse_jobs(self, response: Response) -> list[dict[str, Any]]:
        """The job list of ``GET /jobs`` (packaging tasks included), as the server sent it."""
        payload = response.json()
        jobs = payload.get("jobs") if isinstance(payload, Mapping) else None
        if not isinstance(jobs, list) or not all(isinstance(j, Mapping) for j in jobs):
            raise ProtocolError("job list reply has no 'jobs' list", operation="list jobs")
        return [dict(j) for j in jobs]

    def parse_batch_states(
        self, response: Response, observed_at: datetime, previous: Mapping[str, JobState]
    ) -> dict[str, JobState]:
        """The asked-for jobs among ``GET /jobs``; one not listed (queued: the backend has no
        record yet) reads ``PENDING``, as ``GET /jobs/{uuid}`` would say."""
        asked = response.request.job_ids
        listed = {str(j.get("uuid")): j for j in self.parse_jobs(response)}
        states = {}
        for job_id in asked:
            payload = listed.get(job_id) or {
                "uuid": job_id,
                "name": None,
                "status": "PENDING",
                "progress": None,
                "error": None,
            }
            states[job_id] = self._state(
                payload, observed_at, previous.get(job_id), "list jobs", job_id
            )
        return states

    def parse_processes(self, response: Response) -> list[str]:
        """The process names of ``GET /processes``."""
        payload = response.json()
        names = payload.get("processes") if isinstance(payload, Mapping) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("process list reply has no 'processes'", operation="list processes")
        return names

    def parse_doc(self, response: Response) -> str:
        """The documentation text of ``GET /processes/{name}``."""
        payload = response.json()
        doc = payload.get("doc") if isinstance(payload, Mapping) else None
        if not isinstance(doc, str):
            raise ProtocolError("process reply has no 'doc'", operation=response.request.operation)
        return doc

    def parse_output_names(self, response: Response) -> list[str]:
        """The names of ``GET /jobs/{uuid}/outputs``."""
        payload = response.json()
        names = payload.get("outputs") if isinstance(payload, Mapping) else None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ProtocolError(
                "outputs reply has no 'outputs' list of names",
                operation="list outputs",
                job_id=response.request.job_id,
            )
        return names

    def parse_task_meta(self, response: Response) -> dict[str, Any]:
        """The backend record of ``GET /backend/get_task_meta/{uuid}``."""
        payload = response.json()
        if not isinstance(payload, Mapping) or "status" not in payload:
            raise ProtocolError(
                "task meta reply has no status",
                operation="get task meta",
                job_id=response.request.job_id,
            )
        return dict(payload)
