"""Crash test: a batch SIGKILLed again and again ends exactly as an uninterrupted run does.

`pollkit run` runs in a child process against a `ThreadedSimulator` in this one. The reference
run goes through once. The crashed run is the same command on a simulator with the same
scenario, killed with SIGKILL ten times and started again each time, then left to finish. The
kill moments are drawn (seeded) over the whole life of a run: each waits until the batch's
observable progress (journal rows begun, rows done, files on disk) passes a random point of
its own stratum of the run, then a random few milliseconds more, so that kills land during
the submits, while jobs wait for their polls, during downloads, and while a restarted run
catches up.

The simulators give different job ids (the n-th job created gets the n-th id, and the order of
submits is up to the scheduler), and an output's bytes derive from its job id. So the two runs
are compared through the journal's spec → job rows: a file name has its job id replaced by the
spec's key, and every file's bytes are checked against the sha256 its own simulator published.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pollkit import AsyncClient, MagicHour
from pollkit.batch.journal._records import JournalEntry, default_journal_path
from pollkit.batch.journal._sqlite import SQLiteJournal
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import FAST_CADENCE, FAST_RETRY

JOBS = 500
KILLS = 10
SEED = 20250107
# Renders of 0.06–0.23 s real, all shorter than the CLI's first poll (1 s): a job waits for
# that poll, then is downloaded. Small images keep the 625 files small (~1 KB); one body in
# twelve stalls for 0.2 s halfway, so that some kills find a `.part` with bytes in it.
SCENARIO = Scenario(
    time_scale=100.0,
    queue_delay=(1.0, 3.0),
    render_time=(5.0, 20.0),
    image_size=(32, 32),
    stall_rate=0.08,
    stall_seconds=0.2,
    seed=3,
)
OUTPUTS = sum(1 + (i % 4 == 0) for i in range(JOBS))  # every fourth job makes two images
COMMAND = ("--concurrency", "32", "--resubmit-ambiguous")
SUMMARY = f"{JOBS} of {JOBS} jobs finished: {JOBS} complete; {OUTPUTS} files"


def write_batch(path: Path) -> Path:
    lines = [
        json.dumps(
            {
                "endpoint": "ai-image-generator",
                "body": {"image_count": 1 + (i % 4 == 0), "style": {"prompt": f"crash {i}"}},
                "key": f"k{i:03d}",
            }
        )
        for i in range(JOBS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(sim: ThreadedSimulator, batch: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """The same `pollkit run` command every time; output to files, so no pipe ever fills."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_HOUR_"))}
    env |= {"MAGIC_HOUR_API_KEY": sim.api_key, "MAGIC_HOUR_BASE_URL": sim.url}
    argv = [sys.executable, "-m", "pollkit", "run", str(batch), "--download-dir", str(out)]
    with log.with_suffix(".out").open("wb") as stdout, log.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(
            [*argv, "--no-progress", *COMMAND], env=env, stdout=stdout, stderr=err
        )


def finish(child: subprocess.Popen[bytes], log: Path) -> tuple[int, str, str]:
    code = child.wait(timeout=40)
    return code, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


@dataclass(frozen=True)
class Progress:
    """A batch's progress, as another process sees it: journal rows and files on disk."""

    begun: int  # rows written (a submit was at least about to be sent)
    in_flight: int  # rows "submitting" or "ambiguous": sent or not, nobody knows yet
    done: int
    files: int

    @property
    def steps(self) -> int:
        """Grows with every step of a run (and never shrinks across kills)."""
        return self.begun + self.done + self.files


def journal_rows(out: Path) -> tuple[int, int, int]:
    """(rows begun, in flight, done), read without writing, as another process may."""
    path = default_journal_path(out)
    if not path.exists():
        return 0, 0, 0
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(state IN ('submitting', 'ambiguous')), 0),"
                " COALESCE(SUM(state = 'done'), 0) FROM pollkit_jobs"
            ).fetchone()
    except sqlite3.OperationalError:  # created, but its tables are not committed yet
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])


def output_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if p.is_file() and p.suffix == ".png"]


def progress(out: Path) -> Progress:
    try:
        # Names only (no stat per file): a probe must cost the child and the simulator little.
        files = sum(entry.name.endswith(".png") for entry in os.scandir(out))
    except FileNotFoundError:
        files = 0
    return Progress(*journal_rows(out), files=files)


def wait_until(
    child: subprocess.Popen[bytes],
    out: Path,
    reached: Callable[[Progress], bool],
    since: int,
    log: Path,
) -> None:
    """Until `reached`, and the child made a step of its own (`steps` beyond `since`)."""
    deadline = time.monotonic() + 30
    while not (reached(now := progress(out)) and now.steps > since):
        if child.poll() is not None:
            pytest.fail(f"run ended before its kill: {log.with_suffix('.err').read_text()}")
        assert time.monotonic() < deadline, f"no kill moment after 30 s: {progress(out)}"
        time.sleep(0.005)  # waiting for an observable condition


def kill_moments(rng: random.Random) -> list[tuple[str, Callable[[Progress], bool]]]:
    """Ten conditions, one per stratum of the run, each at a random point of its stratum.

    Six during the submits (rows begun, in [1, 480)); four after every spec has its job,
    while the rest are polled and downloaded (rows done, in [250, 450)). Never near the
    end, so that a run cannot finish between its condition and its kill.
    """
    submits = 6
    moments: list[tuple[str, Callable[[Progress], bool]]] = []
    for k in range(submits):
        begun = 1 + int(80 * (k + rng.random()))
        moments.append((f"{begun} rows begun", lambda p, n=begun: p.begun >= n))
    for k in range(KILLS - submits):
        done = 250 + int(50 * (k + rng.random()))
        moments.append(
            (
                f"all submitted, {done} done",
                lambda p, n=done: p.begun == JOBS and p.in_flight == 0 and p.done >= n,
            )
        )
    return moments


@dataclass(frozen=True)
class Snapshot:
    """What a killed run left behind."""

    moment: str
    states: dict[str, int]
    complete: int  # rows whose job was seen complete (downloaded or not)
    files: int
    parts: int  # partial downloads
    partial: int  # of which with bytes in them, to resume from

    def __str__(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in self.states.items() if n)
        return (
            f"{self.moment}: {states}; {self.complete} seen complete,"
            f" {self.files} files, {self.parts} .part ({self.partial} with bytes)"
        )


def snapshot(out: Path, moment: str) -> Snapshot:
    with SQLiteJournal(default_journal_path(out)) as journal:
        entries = journal.entries()
        states = journal.counts()
    assert_journal_agrees_with_disk(entries)
    return Snapshot(
        moment=moment,
        states=states,
        complete=sum(e.status == "complete" for e in entries),
        files=len(output_files(out)),
        parts=len(parts := list(out.glob("*.png.part"))),
        partial=sum(p.stat().st_size > 0 for p in parts),
    )


def assert_journal_agrees_with_disk(entries: list[JournalEntry]) -> None:
    """Every output the journal recorded is on disk with its recorded size and sha256."""
    for entry in entries:
        for output in entry.outputs:
            data = Path(output.path).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (output.size, output.sha256)


@dataclass(frozen=True)
class Outcome:
    """A finished batch, normalised so that two simulators' runs compare equal."""

    files: frozenset[str]  # names, each with its job id replaced by its spec's key
    journal: dict[str, dict[str, Any]]
    attempts: dict[str, int]
    orphans: int  # jobs on the server that no journal row points to: paid twice


def outcome(out: Path, stats: dict[str, Any]) -> Outcome:
    with SQLiteJournal(default_journal_path(out)) as journal:
        entries = journal.entries()
    key_of = {e.job_id: e.key for e in entries if e.job_id}
    published = {
        f"{j['id']}-{index}.png": o["sha256"]
        for j in stats["jobs"]
        for index, o in enumerate(j["outputs"])
    }

    def normalised(path: Path) -> str:
        # Default template "{job_id}-{index}{ext}": the job id becomes the spec's key.
        job_id, rest = path.name.rsplit("-", 1)
        return f"{key_of.get(job_id, 'unknown-job:' + job_id)}-{rest}"

    files = output_files(out)
    for path in files:
        # Byte-exact with what this run's simulator published for that job and index.
        assert hashlib.sha256(path.read_bytes()).hexdigest() == published.get(path.name), path
    # Normalised away: job ids (each simulator draws its own), timestamps (created, submitted,
    # finished), attempts (a resubmitted ambiguous row counts one more; compared on their own),
    # absolute paths, and output sizes / digests (they follow from the job id's bytes, and are
    # checked against the disk and the simulator instead).
    assert_journal_agrees_with_disk(entries)
    rows = {
        e.key: {
            "provider": e.provider,
            "spec": e.spec,
            "state": e.state,
            "kind": e.kind,
            "status": e.status,
            "native_status": e.native_status,
            "error": e.error,
            "has_job": e.job_id is not None,
            "outputs": [(o.index, normalised(Path(o.path))) for o in e.outputs],
        }
        for e in entries
    }
    server_ids = {j["id"] for j in stats["jobs"]}
    assert set(key_of) <= server_ids  # every job the journal names exists
    return Outcome(
        files=frozenset(normalised(p) for p in files),
        journal=rows,
        attempts={e.key: e.attempts for e in entries},
        orphans=len(server_ids - set(key_of)),
    )


@pytest.mark.timeout(120)  # 15–30 s on a shared 2-core machine; the default 60 s is too tight
def test_ten_sigkills_then_rerun_end_exactly_as_an_uninterrupted_run(tmp_path: Path) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl")
    logs = tmp_path / "logs"
    logs.mkdir()

    reference_out = tmp_path / "reference"
    with ThreadedSimulator(SCENARIO) as sim:
        started = time.monotonic()
        code, stdout, stderr = finish(start(sim, batch, reference_out, logs / "ref"), logs / "ref")
        reference_seconds = time.monotonic() - started
        assert code == 0, stderr
        assert stdout == SUMMARY + "\n"  # the summary line, and no job listed as failed
        reference = outcome(reference_out, sim.stats())
    assert reference.orphans == 0
    assert set(reference.attempts.values()) == {1}

    rng = random.Random(SEED)
    out = tmp_path / "crashed"
    kills: list[Snapshot] = []
    in_flight = 0  # rows left "submitting" by the kills: submits that may have reached the API
    with ThreadedSimulator(SCENARIO) as sim:
        for k, (moment, reached) in enumerate(kill_moments(rng)):
            log = logs / f"run{k}"
            before = progress(out).steps
            child = start(sim, batch, out, log)
            # A moment already passed by the last kill's overshoot still waits for this run's
            # own first step, so that no kill lands before the child has done anything.
            wait_until(child, out, reached, before, log)
            time.sleep(rng.uniform(0, 0.025))  # the random moment: the point of the test
            assert child.poll() is None, f"run {k} ended before its kill"
            child.send_signal(signal.SIGKILL)
            assert finish(child, log)[0] == -signal.SIGKILL
            kills.append(snapshot(out, moment))
            in_flight += kills[-1].states["submitting"]
        log = logs / "final"
        code, stdout, stderr = finish(start(sim, batch, out, log), log)
        assert code == 0, stderr
        assert stdout == SUMMARY + "\n"  # the summary line, and no job listed as failed
        crashed = outcome(out, sim.stats())

    report = "\n".join(f"kill {k} at {s}" for k, s in enumerate(kills))
    report += f"\n{in_flight} submits in flight at the kills, {crashed.orphans} duplicates"
    print(f"reference run {reference_seconds:.2f} s\n{report}")  # shown with -s
    # The kills landed all over the run: before every spec was submitted, after (by
    # construction), with submitted jobs not yet seen complete, with a download under way.
    # (How many find a submit request out, or a `.part` with bytes, is up to the timing.)
    with_job = [s.states["submitted"] + s.states["done"] for s in kills]
    assert sum(n < JOBS for n in with_job) >= 4, report
    assert sum(n == JOBS for n in with_job) >= 4, report
    assert sum(s.complete < n for s, n in zip(kills, with_job, strict=True)) >= 4, report
    assert any(s.parts for s in kills), report

    assert crashed.files == reference.files
    assert len(crashed.files) == OUTPUTS
    assert crashed.journal == reference.journal
    # Nothing else in the directory: no `.part`, `.part.json`, temporary or renamed copy.
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == [".pollkit"]
    assert not list(out.glob("* (*)*"))
    # Submitted twice only where the journal says a submit was in flight at a kill and the
    # rerun sent it again (Magic Hour cannot be asked whether the first one arrived).
    resubmitted = sum(n - 1 for n in crashed.attempts.values())
    assert resubmitted == in_flight, report
    assert crashed.orphans <= resubmitted, report


class SlowJournal(SQLiteJournal):
    """A journal on a slow disk: every write takes 5 ms. Logs the order of its writes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, durable=False)
        self.writes: list[tuple[str, str]] = []

    def _write(self, what: str, key: str) -> None:
        time.sleep(0.005)  # the disk flush (runs in the journal's own thread)
        self.writes.append((what, key))

    def begin_submit(self, key: str, provider: str, spec: Any) -> JournalEntry:
        self._write("begin", key)
        return super().begin_submit(key, provider, spec)

    def record_submitted(self, key: str, *args: Any) -> None:
        self._write("submitted", key)
        super().record_submitted(key, *args)

    def record_status(self, key: str, *args: Any) -> None:
        self._write("status", key)
        super().record_status(key, *args)

    def record_output(self, key: str, *args: Any) -> None:
        self._write("output", key)
        super().record_output(key, *args)

    def record_done(self, key: str) -> None:
        self._write("done", key)
        super().record_done(key)


async def test_a_job_id_is_written_before_the_writes_queued_behind_it(tmp_path: Path) -> None:
    # Regression: journal calls ran first come, first served, so a job id just received waited
    # behind every queued write; a SIGKILL then left a dozen created jobs "submitting", each
    # paid for twice by the rerun. Now it overtakes them: what runs between a spec's row and
    # its job id is only what started while its submit request was out.
    scenario = Scenario(time_scale=1000.0, queue_delay=1.0, render_time=5.0, image_size=(8, 8))
    async with Simulator(scenario) as sim:
        provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        with SlowJournal(tmp_path / "journal.sqlite") as journal:
            async with AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
                specs = [
                    {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": f"{i}"}}
                    for i in range(24)
                ]
                results = [
                    r
                    async for r in client.run(
                        specs, download_directory=tmp_path, journal=journal, concurrency=12
                    )
                ]
    assert all(r.ok for r in results)
    order = {(what, key): n for n, (what, key) in enumerate(journal.writes)}
    between = sorted(
        order[("submitted", key)] - order[("begin", key)] - 1
        for what, key in journal.writes
        if what == "begin"
    )
    # Always 1 here (the write under way while the request was out); first come, first
    # served, 11 to 23: the other submits' rows, then their statuses and outputs.
    assert between[len(between) // 2] <= 2, between
