"""The simulator's memory: jobs, their planned outcomes, signed file URLs and request counters.

A job's status is never stored: it is computed from the clock whenever someone reads it
(queued until ``created_at + queue_delay``, rendering until ``finishes_at``, then the outcome),
so ten thousand jobs cost no background tasks. All mutation happens under one lock, which
makes the state safe to drive from another thread (`ThreadedSimulator`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from pollkit.sim._clock import SimClock
from pollkit.sim._faults import BODY_FAULTS
from pollkit.sim._scenario import Duration, LogNormal, Scenario
from pollkit.sim.transfer._archives import built_archives
from pollkit.sim.transfer._files import FileInfo, FileStore, Maker

__all__ = [
    "OUTCOMES",
    "STATE",
    "TERMINAL",
    "Job",
    "OutputFile",
    "OutputSpec",
    "PlanEntry",
    "SimState",
]

Outcome = Literal["complete", "error", "canceled", "draft"]
OUTCOMES: tuple[str, ...] = ("complete", "error", "canceled", "draft")
TERMINAL = frozenset({"complete", "error", "canceled"})

_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_FILES_PREFIX = "/_sim/files"


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """An output a new job will have (`SimState.create_job`).

    Attributes:
        extension: File extension without the dot, for generated names.
        media_type: MIME type.
        name: A fixed file name (PiXYZ's ``iso.png``…); None generates one from the job id.
        make: Makes the content from the file's key; None: a PNG or MP4 by `media_type`.
    """

    extension: str
    media_type: str
    name: str | None = None
    make: Maker | None = None


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One output of a job: its name in the URL, its media type and how its bytes are made."""

    index: int
    name: str
    media_type: str
    make: Maker | None = field(default=None, compare=False, repr=False)

    def url_path(self, job_id: str) -> str:
        """The path (no query) where the file is served."""
        return f"{_FILES_PREFIX}/{job_id}/{self.name}"


@dataclass(slots=True)
class Job:
    """One simulated job. Times are simulated seconds.

    Attributes:
        id: The job's id.
        dialect: Which API created it (``"magichour"``).
        kind: ``"image"`` or ``"video"``: which GET route serves it.
        type: The API's project type, e.g. ``AI_IMAGE``.
        created_at: When it was created.
        queue_delay: How long it stays queued.
        render_time: How long it then renders.
        outcome: How it ends: ``complete``, ``error``, ``canceled`` or ``draft`` (never starts).
        outputs: Its output files (served only once it is complete).
        details: Dialect-specific fields echoed in replies (name, credits, fps…).
        canceled_at: When a user canceled it, if they did.
        deleted: Whether it was deleted.
        status_requests: How many GETs of it were answered.
        download_requests: How many requests for its output files were answered (each
            range request of a resumed download counts).
        unknown_window: Simulated times ``[start, end)`` during which status reads show the
            dialect's unknown native status (`Scenario.unknown_status_rate`), or None.
    """

    id: str
    dialect: str
    kind: str
    type: str
    created_at: float
    queue_delay: float
    render_time: float
    outcome: str
    outputs: tuple[OutputFile, ...]
    details: dict[str, Any] = field(default_factory=dict)
    canceled_at: float | None = None
    deleted: bool = False
    status_requests: int = 0
    download_requests: int = 0
    unknown_window: tuple[float, float] | None = None

    @property
    def finishes_at(self) -> float:
        """When rendering ends (meaningless for `draft` jobs, which never start)."""
        return self.created_at + self.queue_delay + self.render_time

    def status(self, now: float) -> str:
        """The job's status at simulated time `now`."""
        if self.canceled_at is not None and now >= self.canceled_at:
            return "canceled"
        if self.outcome == "draft":
            return "draft"
        if now < self.created_at + self.queue_delay:
            return "queued"
        if now < self.finishes_at:
            return "rendering"
        return self.outcome

    def finished_at(self, now: float) -> float | None:
        """When the job reached its terminal status, or None if it has not yet at `now`."""
        if self.canceled_at is not None and now >= self.canceled_at:
            return self.canceled_at
        if self.outcome == "draft" or now < self.finishes_at:
            return None
        return self.finishes_at


@dataclass(slots=True)
class PlanEntry:
    """A planned outcome (and optionally durations) for the next `remaining` jobs."""

    outcome: str | None
    queue_delay: float | None
    render_time: float | None
    remaining: int


class SimState:
    """Jobs, plans, files and counters of one simulator.

    Args:
        scenario: The behaviour to simulate.
        clock: The simulated clock.
        api_key: The accepted API key (also mixed into the URL signing key).
    """

    def __init__(self, scenario: Scenario, clock: SimClock, api_key: str) -> None:
        self.scenario = scenario
        self.clock = clock
        self.api_key = api_key
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.files = FileStore(
            seed=scenario.seed, image_size=scenario.image_size, video_bytes=scenario.video_bytes
        )
        # Separate streams, so that e.g. planning an outcome does not shift later ids.
        self._job_rng = random.Random(f"{scenario.seed}:jobs")
        self._id_rng = random.Random(f"{scenario.seed}:ids")
        self._unknown_rng = random.Random(f"{scenario.seed}:unknown-status")
        self._plans: deque[PlanEntry] = deque()
        self._sign_key = hashlib.sha256(f"pollkit-sim:{scenario.seed}:{api_key}".encode()).digest()
        self.requests_total = 0
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.injected = 0
        self.file_bytes_served = 0
        self.blob_bytes_served = 0
        self.archive_bytes_served = 0
        self.download_faults: Counter[str] = Counter(dict.fromkeys(BODY_FAULTS, 0))
        self.faults: Counter[str] = Counter()
        self._shown_unknown: set[str] = set()
        # Told of every job created, canceled or deleted (the event streams follow them).
        self.job_listeners: list[Callable[[Job], None]] = []
        self.push_counts: Counter[str] = Counter(events=0, webhooks=0, webhook_failures=0)
        self._generation = 0

    # -- jobs ---------------------------------------------------------------------------

    def _new_id(self, style: str) -> str:
        while True:
            if style == "uuid":
                job_id = str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))
            else:
                job_id = "c" + "".join(self._id_rng.choice(_ID_ALPHABET) for _ in range(24))
            if job_id not in self.jobs:
                return job_id

    def _draw(self, duration: Duration) -> float:
        if isinstance(duration, LogNormal):
            # Inverse transform: one uniform draw per duration, whatever the truncation.
            share = self._job_rng.random()
            while share == 0.0:  # the one value of [0, 1) with no quantile; 1 in 2**53
                share = self._job_rng.random()
            return duration.quantile(share)
        low, high = duration
        return self._job_rng.uniform(low, high)

    def _draw_outcome(self) -> str:
        draw = self._job_rng.random()
        if draw < self.scenario.failure_rate:
            return "error"
        if draw < self.scenario.failure_rate + self.scenario.cancel_rate:
            return "canceled"
        return "complete"

    def plan(
        self,
        outcome: str | None,
        queue_delay: float | None,
        render_time: float | None,
        count: int,
    ) -> None:
        """Plan the next `count` jobs (see `Simulator.plan_next`).

        Raises:
            ValueError: An unknown outcome, a negative duration or a count below 1.
        """
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        for label, value in (("queue_delay", queue_delay), ("render_time", render_time)):
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise ValueError(f"{label} must be a finite number >= 0")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self.lock:
            self._plans.append(PlanEntry(outcome, queue_delay, render_time, count))

    def create_job(
        self,
        *,
        dialect: str,
        kind: str,
        type_: str,
        outputs: Sequence[tuple[str, str] | OutputSpec],
        details: dict[str, Any],
        id_style: Literal["cuid", "uuid"] = "cuid",
    ) -> Job:
        """Register a new job, drawing its durations and outcome (or taking the next plan).

        Args:
            dialect: The API that created it.
            kind: The dialect's job kind (``"image"``, ``"video"``…).
            type_: The API's project type.
            outputs: Each output, in order: an `OutputSpec`, or ``(extension, media type)``.
            details: Dialect-specific fields.
            id_style: ``"cuid"`` (Magic Hour's ``c…`` ids) or ``"uuid"`` (Pixy, PiXYZ).
        """
        with self.lock:
            now = self.clock.now()
            # Draw everything even when a plan overrides it, so later jobs see the same numbers
            # whether or not a test planned something.
            queue_delay = self._draw(self.scenario.queue_delay)
            render_time = self._draw(self.scenario.render_time)
            outcome = self._draw_outcome()
            if self._plans:
                plan = self._plans[0]
                plan.remaining -= 1
                if plan.remaining == 0:
                    self._plans.popleft()
                outcome = plan.outcome or outcome
                queue_delay = queue_delay if plan.queue_delay is None else plan.queue_delay
                render_time = render_time if plan.render_time is None else plan.render_time
            job_id = self._new_id(id_style)
            specs = [o if isinstance(o, OutputSpec) else OutputSpec(*o) for o in outputs]
            files = tuple(
                OutputFile(
                    index,
                    spec.name or self._file_name(job_id, index, spec.extension),
                    spec.media_type,
                    spec.make,
                )
                for index, spec in enumerate(specs)
            )
            job = Job(
                id=job_id,
                dialect=dialect,
                kind=kind,
                type=type_,
                created_at=now,
                queue_delay=queue_delay,
                render_time=render_time,
                outcome=outcome,
                outputs=files,
                details=details,
            )
            rate = self.scenario.unknown_status_rate
            if rate > 0 and self._unknown_rng.random() < rate:
                share = self._unknown_rng.uniform(0.3, 0.6)
                start = job.created_at + queue_delay + render_time * share
                job.unknown_window = (start, start + render_time / 5)
            self.jobs[job_id] = job
        self._changed(job)
        return job

    def _changed(self, job: Job) -> None:
        for listener in self.job_listeners:
            listener(job)

    def _file_name(self, job_id: str, index: int, extension: str) -> str:
        stem = "output" if self.scenario.basename == "per_project" else job_id
        return f"{stem}-{index}.{extension}"

    def cancel(self, job_id: str) -> str:
        """Cancel a job as a user would from the web app; terminal jobs are left alone.

        Returns:
            The job's status afterwards.

        Raises:
            KeyError: No job has this id.
        """
        with self.lock:
            job = self.jobs[job_id]
            now = self.clock.now()
            if job.status(now) not in TERMINAL:
                job.canceled_at = now
                job.outcome = "canceled"  # stats report how the job really ended
            status = job.status(now)
        self._changed(job)
        return status

    def shows_unknown_status(self, job: Job, now: float) -> bool:
        """Whether a status read of `job` at `now` shows the dialect's unknown native status.

        Only while the job renders, inside its `Job.unknown_window`; each job that showed one
        counts once in the stats' ``faults["unknown_status"]``.
        """
        window = job.unknown_window
        if window is None or not window[0] <= now < window[1]:
            return False
        if job.status(now) != "rendering":
            return False
        with self.lock:
            if job.id not in self._shown_unknown:
                self._shown_unknown.add(job.id)
                self.faults["unknown_status"] += 1
        return True

    def delete(self, job: Job) -> None:
        """Mark a job deleted; one that has not finished stops (it reads as `canceled`)."""
        with self.lock:
            now = self.clock.now()
            if job.status(now) not in TERMINAL:
                job.canceled_at = now
                job.outcome = "canceled"
            job.deleted = True
        self._changed(job)

    # -- files --------------------------------------------------------------------------

    def file_info(self, job: Job, output: OutputFile) -> FileInfo:
        """Size and digest of an output, generating the file on first use."""
        return self.files.info(job.id, output.index, output.name, output.media_type, output.make)

    def file_data(self, job: Job, output: OutputFile) -> tuple[FileInfo, bytes]:
        """An output's description and bytes, generating the file on first use."""
        return self.files.get(job.id, output.index, output.name, output.media_type, output.make)

    def signature(self, path: str, expires: int) -> str:
        """HMAC of a file path and its expiry time."""
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._sign_key, message, hashlib.sha256).hexdigest()

    def signed_url(self, origin: str, job: Job, output: OutputFile) -> tuple[str, float]:
        """A download URL valid for ``url_ttl`` from now, and its expiry as a Unix time.

        Args:
            origin: ``scheme://host[:port]`` the client reached us at.
            job: The job.
            output: Which of its outputs.
        """
        expires = math.ceil(self.clock.wall(self.clock.now() + self.scenario.url_ttl))
        path = output.url_path(job.id)
        url = f"{origin}{path}?expires={expires}&sig={self.signature(path, expires)}"
        return url, float(expires)

    def check_signature(self, path: str, expires: str | None, sig: str | None) -> str | None:
        """Why a signed URL is refused (``"bad signature"`` / ``"expired"``), or None if valid."""
        if not expires or not sig or not expires.isdigit():
            return "bad signature"
        if not hmac.compare_digest(self.signature(path, int(expires)), sig):
            return "bad signature"
        if self.clock.wall(self.clock.now()) > int(expires):
            return "expired"
        return None

    # -- counters -----------------------------------------------------------------------

    def count_request(self, route: str, status: str, *, injected: bool) -> None:
        """Record one answered (or reset) request."""
        with self.lock:
            self.requests_total += 1
            self.by_route[route] += 1
            self.by_status[status] += 1
            if injected:
                self.injected += 1

    def count_file_bytes(self, count: int) -> None:
        """Record body bytes written for file downloads."""
        with self.lock:
            self.file_bytes_served += count

    def count_blob_bytes(self, count: int) -> None:
        """Record body bytes written for blob downloads."""
        with self.lock:
            self.blob_bytes_served += count

    def count_archive_bytes(self, count: int) -> None:
        """Record body bytes written for archive downloads."""
        with self.lock:
            self.archive_bytes_served += count

    def count_download_fault(self, kind: str) -> None:
        """Record a body fault (``truncate``, ``reset_mid``, ``stall``) that took effect.

        It counts as an injected fault too, like the faults that replace a response.
        """
        with self.lock:
            self.download_faults[kind] += 1
            self.faults[kind] += 1
            self.injected += 1

    def count_fault(self, label: str) -> None:
        """Record one fault or refusal in the stats' ``faults`` (see `stats`), by label."""
        with self.lock:
            self.faults[label] += 1

    def next_generation(self) -> int:
        """A new generation number for validators that change on every response."""
        with self.lock:
            self._generation += 1
            return self._generation

    def stats(self) -> dict[str, Any]:
        """The JSON document of ``GET /_sim/stats``.

        ``requests.faults`` counts what the scenario and `Simulator.inject` did on purpose, by
        kind: ``5xx``, ``429`` (other injected statuses under their code) and ``reset`` on API
        requests; ``truncate``, ``reset_mid``, ``stall`` and ``slow`` on download bodies;
        ``unknown_status`` (jobs that showed one). It also counts two refusals that follow
        from the scenario's timings, not from a draw: ``url_expired`` (signed URLs refused as
        expired) and ``archive_not_ready`` (PiXYZ archive requests answered 425). Only the
        faults that failed a request count in ``requests.injected``. Each job's row gives its
        ``unknown_status_window`` (simulated ``[start, end)``, or None), and how many of its
        status reads (``status_requests``) and output file requests (``download_requests``)
        were answered.
        """
        with self.lock:
            now = self.clock.now()
            jobs = list(self.jobs.values())
            requests = {
                "total": self.requests_total,
                "by_route": dict(self.by_route),
                "by_status": dict(self.by_status),
                "injected": self.injected,
                "file_bytes_served": self.file_bytes_served,
                "blob_bytes_served": self.blob_bytes_served,
                "archive_bytes_served": self.archive_bytes_served,
                "download_faults": dict(self.download_faults),
                "faults": dict(self.faults),
            }
            push = dict(self.push_counts)
        rows = []
        for job in jobs:
            status = job.status(now)
            outputs = []
            if status == "complete":
                for output in job.outputs:
                    info = self.file_info(job, output)
                    outputs.append(
                        {
                            "name": info.name,
                            "size": info.size,
                            "sha256": info.sha256,
                            "url_path": output.url_path(job.id),
                        }
                    )
            rows.append(
                {
                    "id": job.id,
                    "dialect": job.dialect,
                    "kind": job.kind,
                    "type": job.type,
                    "status": status,
                    "outcome": job.outcome,
                    "created_at": job.created_at,
                    "queue_delay": job.queue_delay,
                    "render_time": job.render_time,
                    "finished_at": job.finished_at(now),
                    "status_requests": job.status_requests,
                    "download_requests": job.download_requests,
                    "unknown_status_window": job.unknown_window,
                    "deleted": job.deleted,
                    "outputs": outputs,
                }
            )
        # Only archives already built: building all of them costs about a second of zlib,
        # which a stats call must not spend (the first request for an archive builds it).
        archives = {}
        for kind, archive in built_archives().items():
            archives[kind] = {
                "size": archive.size,
                "sha256": archive.sha256,
                "entries": list(archive.entries),
                "url_path": f"/_sim/archives/{kind}.zip",
            }
        return {
            "now": now,
            "time_scale": self.scenario.time_scale,
            "jobs": rows,
            "requests": requests,
            "push": push,
            "archives": archives,
        }


#: Where the application keeps its `SimState`.
STATE: web.AppKey[SimState] = web.AppKey("pollkit_sim_state", SimState)
