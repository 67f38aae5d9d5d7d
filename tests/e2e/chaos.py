"""Many jobs through the simulator's ``chaos`` scenario, every provider at once, then every
result checked against the simulator's own record. Shared by ``tests/e2e/test_chaos.py`` and
``benchmarks/bench_chaos.py`` (not collected: the name does not start with ``test_``).

The batch is split into lanes, one client each, run at the same time against one simulator:
Magic Hour images and videos, Pixy images (one or four outputs) and videos, PiXYZ jobs whose
outputs are fetched file by file, and PiXYZ jobs whose outputs come as one zip archive (extracted).

A submit answered 503 or 429 is retried (the server says it did not take it). One answered 500,
502 or 504, or reset after it was sent, is *ambiguous* (the job may exist: these APIs take no
idempotency key): PiXYZ lanes look its tag (the job's name) up in ``GET /jobs`` and send it again
only once the lookup window shows no job carries it; Magic Hour and Pixy lanes report it failed
instead of paying twice. A lane therefore runs in passes over the same journal, as a user would
rerun ``pollkit run --resubmit-ambiguous``: the journal replays what is done, picks up jobs whose
downloads gave out, and submits the ambiguous specs again. The chaos scenario fails requests
before they reach a handler, so a resubmit never creates a second job, and the simulator's job
count must equal the spec count.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pollkit import (
    AmbiguousSubmit,
    AsyncClient,
    Cadence,
    DownloadPolicy,
    MagicHour,
    Result,
    RetryPolicy,
    Status,
    SubmitPolicy,
)
from pollkit.client._pixy import PixyClient
from pollkit.client._pixyz import PixyzClient
from pollkit.providers.pixy import Pixy
from pollkit.providers.pixyz import Pixyz

#: Lanes, and the share of the batch each one gets.
SHARES: dict[str, float] = {
    "magichour-image": 0.25,
    "magichour-video": 0.15,
    "pixy": 0.25,
    "pixyz-files": 0.175,
    "pixyz-archive": 0.175,
}
#: The faults the chaos scenario draws.
DRAWN_FAULTS = ("5xx", "429", "reset", "truncate", "reset_mid", "stall", "slow", "unknown_status")
#: Refusals that follow from its timings: expired URLs, archives not packed yet.
REFUSALS = ("url_expired", "archive_not_ready")
#: Every kind of fault or refusal the chaos scenario must have produced.
FAULT_KINDS = DRAWN_FAULTS + REFUSALS

# Real seconds. Jobs take 0.3–1.15 s at the scenario's 20× clock; the deadline only guards
# against a job that never ends.
CADENCE = Cadence(initial=0.05, maximum=0.25, timeout=60)
RETRY = RetryPolicy(initial=0.01, maximum=0.2, max_attempts=8, max_elapsed=30)
DOWNLOAD = DownloadPolicy(
    stall_timeout=0.5,  # the scenario's stalls last 1 s: a stalled body is retried
    not_ready=Cadence(initial=0.05, maximum=0.2, timeout=30),
)
# A PiXYZ job is listed (with its name) once a worker runs it: within the scenario's 3 simulated
# seconds of queue, 0.15 s real. The window leaves room for a busy client and machine.
SUBMIT = SubmitPolicy(lookup_window=3.0)
MAX_PASSES = 6


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Lane:
    """One client's share of the batch, and what its passes gave."""

    name: str
    make_client: Callable[[], AsyncClient]
    specs: list[dict[str, Any]]
    directory: Path
    final: dict[str, Result] = field(default_factory=dict)
    passes: int = 0
    # The first pass's results that the batch gave up on, by why: what a single run leaves.
    first_pass_errors: Counter[str] = field(default_factory=Counter)
    # The same, by what happened to the request (``HTTP 502``, ``reset``…).
    first_pass_causes: Counter[str] = field(default_factory=Counter)


def _magichour_image(i: int) -> dict[str, Any]:
    prompt = f"chaos image {i}"
    return {"tool": "ai-image-generator", "image_count": 1 + i % 2, "style": {"prompt": prompt}}


def _magichour_video(i: int) -> dict[str, Any]:
    return {"tool": "text-to-video", "end_seconds": 5, "style": {"prompt": f"chaos video {i}"}}


def _pixy(i: int) -> dict[str, Any]:
    if i % 4 == 1:
        return {"type": "video", "engine": "luma", "user_prompt": f"chaos video {i}"}
    engine = "midjourney" if i % 5 == 0 else "photon_flash"  # four outputs, or one
    return {"type": "image", "engine": engine, "delineation": f"chaos image {i}"}


def _pixyz(model: Path, lane: str) -> Callable[[int], dict[str, Any]]:
    def spec(i: int) -> dict[str, Any]:
        name = f"{lane}-{i}"
        if i % 2:
            params = {"extension": "glb"}
            return {"process": "convert_file", "file": str(model), "params": params, "name": name}
        params = {"width": 9, "height": 5}
        return {
            "process": "generate_thumbnails",
            "file": str(model),
            "params": params,
            "name": name,
        }

    return spec


def build_lanes(urls: dict[str, str], api_key: str, jobs: int, root: Path) -> list[Lane]:
    """The lanes of a batch of `jobs` specs, downloading under `root`.

    Args:
        urls: Each dialect's base URL (`Simulator.urls`).
        api_key: The simulator's key.
        jobs: Specs in all.
        root: Each lane downloads into ``root/<lane>`` (its journal included).
    """
    model = root / "bracket.step"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"ISO-10303-21;" * 100)
    counts = {name: int(jobs * share) for name, share in SHARES.items()}
    counts["magichour-image"] += jobs - sum(counts.values())
    common: dict[str, Any] = {"cadence": CADENCE, "retry": RETRY, "timeout": 10.0, "submit": SUBMIT}

    def magichour() -> AsyncClient:
        provider = MagicHour(api_key=api_key, base_url=urls["magichour"])
        return AsyncClient(provider, download=DOWNLOAD, **common)

    def pixy() -> AsyncClient:
        return PixyClient(Pixy(api_key=api_key, base_url=urls["pixy"]), download=DOWNLOAD, **common)

    def pixyz_files() -> AsyncClient:
        provider = Pixyz(api_key=api_key, base_url=urls["pixyz"])
        return PixyzClient(provider, download=DOWNLOAD, **common)

    def pixyz_archive() -> AsyncClient:
        provider = Pixyz(api_key=api_key, base_url=urls["pixyz"], outputs="archive")
        extract = DOWNLOAD.model_copy(update={"extract_archives": True})
        return PixyzClient(provider, download=extract, **common)

    plans: dict[str, tuple[Callable[[], AsyncClient], Callable[[int], dict[str, Any]]]] = {
        "magichour-image": (magichour, _magichour_image),
        "magichour-video": (magichour, _magichour_video),
        "pixy": (pixy, _pixy),
        "pixyz-files": (pixyz_files, _pixyz(model, "files")),
        "pixyz-archive": (pixyz_archive, _pixyz(model, "archive")),
    }
    return [
        Lane(name, make, [spec(i) for i in range(counts[name])], root / name)
        for name, (make, spec) in plans.items()
    ]


def _why(result: Result) -> str:
    if result.state.error is not None and result.state.error.code == "ambiguous_submit":
        return "ambiguous submit"
    return type(result.error).__name__


def _cause(result: Result) -> str:
    """What happened to a given-up submit's request: its HTTP status, or how it broke."""
    error = result.error
    reason = error.reason if isinstance(error, AmbiguousSubmit) else str(error)
    match = re.search(r"HTTP (\d{3})", reason)
    if match:
        return f"HTTP {match.group(1)}"
    if "Disconnected" in reason or "reset" in reason.lower() or "connection" in reason:
        return "reset after sending"
    return type(error).__name__


async def run_lane(lane: Lane, *, concurrency: int = 32) -> None:
    """Run `lane` in passes until every spec has a result the batch did not give up on."""
    async with lane.make_client() as client:
        while len(lane.final) < len(lane.specs) and lane.passes < MAX_PASSES:
            lane.passes += 1
            async for result in client.run(
                lane.specs,
                download_directory=lane.directory,
                concurrency=concurrency,
                resubmit_ambiguous=lane.passes > 1,
            ):
                assert result.key is not None
                if result.error is None:
                    # A later pass only replays it from the journal (without extracted paths).
                    lane.final.setdefault(result.key, result)
                elif lane.passes == 1:
                    lane.first_pass_errors[_why(result)] += 1
                    lane.first_pass_causes[_cause(result)] += 1


async def run_all(lanes: Sequence[Lane]) -> float:
    """Run every lane at once; return the wall time in seconds."""
    started = time.monotonic()
    await asyncio.gather(*(run_lane(lane) for lane in lanes))
    return time.monotonic() - started


@dataclass
class Report:
    """What the checks found."""

    specs: int = 0
    sim_jobs: int = 0
    results: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    jobs_by_lane: dict[str, int] = field(default_factory=dict)
    outcomes_by_lane: dict[str, Counter[str]] = field(default_factory=dict)
    files_verified: int = 0
    part_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    first_pass_errors: Counter[str] = field(default_factory=Counter)
    first_pass_by_lane: dict[str, Counter[str]] = field(default_factory=dict)
    passes: int = 0

    @property
    def duplicates(self) -> int:
        """Jobs the simulator holds beyond one per spec."""
        return self.sim_jobs - self.specs


def _expected_status(job: dict[str, Any]) -> str:
    # A canceled Pixy video or subtitle reads `task_status: error` (the base library has no
    # cancelled task status, docs/apis/pixy.md), and "either field reads error" makes it an error.
    if job["dialect"] == "pixy" and job["kind"] != "image" and job["status"] == "canceled":
        return "error"
    return str(job["status"])


def _check(lane: Lane, result: Result, job: dict[str, Any], report: Report) -> None:
    where = f"{lane.name} job {result.job_id}"
    if result.status.value != _expected_status(job):
        report.problems.append(f"{where}: reported {result.status.value}, server {job['status']}")
        return
    if result.status is not Status.COMPLETE:
        if result.downloaded_paths:
            report.problems.append(f"{where}: {result.status.value} but files were saved")
        return
    served = {o["name"]: o["sha256"] for o in job["outputs"]}
    if lane.name == "pixyz-archive":
        extracted = {p.name: sha256_file(p) for p in result.extracted_paths}
        if extracted != served:
            report.problems.append(f"{where}: extracted {sorted(extracted)} differ from served")
            return
        report.files_verified += len(extracted)
        return
    on_disk = [sha256_file(p) for p in result.downloaded_paths]
    if on_disk != [o["sha256"] for o in job["outputs"]] or list(result.sha256) != on_disk:
        report.problems.append(f"{where}: files on disk differ from the served outputs")
        return
    report.files_verified += len(on_disk)


def verify(lanes: Sequence[Lane], stats: dict[str, Any]) -> Report:
    """Check every lane's results against the simulator's stats."""
    jobs = {job["id"]: job for job in stats["jobs"]}
    report = Report(
        specs=sum(len(lane.specs) for lane in lanes),
        sim_jobs=len(jobs),
        faults=dict(stats["requests"].get("faults", {})),
        requests=stats["requests"]["total"],
        passes=max((lane.passes for lane in lanes), default=0),
    )
    seen: set[str] = set()
    for lane in lanes:
        report.jobs_by_lane[lane.name] = len(lane.specs)
        report.first_pass_errors += lane.first_pass_errors
        report.first_pass_by_lane[lane.name] = lane.first_pass_causes
        outcomes = report.outcomes_by_lane.setdefault(lane.name, Counter())
        if len(lane.final) != len(lane.specs):
            missing = len(lane.specs) - len(lane.final)
            report.problems.append(f"{lane.name}: {missing} specs without a result")
        for result in lane.final.values():
            report.results += 1
            outcomes[result.status.value] += 1
            report.outcomes[result.status.value] += 1
            job = jobs.get(result.job_id)
            if job is None or result.job_id in seen:
                report.problems.append(f"{lane.name}: job {result.job_id!r} unknown or repeated")
                continue
            seen.add(result.job_id)
            _check(lane, result, job, report)
        leftovers = [*lane.directory.rglob("*.part"), *lane.directory.rglob("*.part.json")]
        report.part_files += [str(p) for p in leftovers]
    return report


def table(report: Report, wall: float) -> str:
    """The report as Markdown tables."""
    lines = [
        "| lane | jobs | complete | error | canceled | unsubmitted after one pass |",
        "|---|---|---|---|---|---|",
    ]
    for lane, count in report.jobs_by_lane.items():
        got = report.outcomes_by_lane.get(lane, Counter())
        causes = report.first_pass_by_lane.get(lane, Counter())
        left = ", ".join(f"{n} {why}" for why, n in sorted(causes.items())) or "0"
        lines.append(
            f"| {lane} | {count} | {got['complete']} | {got['error']} | {got['canceled']}"
            f" | {left} |"
        )
    o = report.outcomes
    left_all = sum(report.first_pass_errors.values())
    lines.append(
        f"| **all** | {report.specs} | {o['complete']} | {o['error']} | {o['canceled']}"
        f" | {left_all} ({left_all / max(report.specs, 1):.1%}) |"
    )
    lines += ["", "| fault | injected |", "|---|---|"]
    lines += [f"| {kind} | {report.faults.get(kind, 0)} |" for kind in FAULT_KINDS]
    others = sorted(set(report.faults) - set(FAULT_KINDS))
    lines += [f"| {kind} | {report.faults[kind]} |" for kind in others]
    first = ", ".join(f"{n} {why}" for why, n in report.first_pass_errors.most_common()) or "none"
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| jobs on the simulator / specs | {report.sim_jobs} / {report.specs} |",
        f"| duplicate submissions | {report.duplicates} |",
        f"| outputs verified byte-exact | {report.files_verified} |",
        f"| `.part` files left | {len(report.part_files)} |",
        f"| problems | {len(report.problems)} |",
        f"| given up in the first pass | {first} |",
        f"| passes | {report.passes} |",
        f"| wall time | {wall:.1f} s |",
        f"| requests / job | {report.requests / max(report.specs, 1):.1f} |",
    ]
    return "\n".join(lines)
