"""Submits that tell the truth, over real sockets: what was never sent is retried, what the
server said it did not take is retried after its Retry-After, what may exist is looked up (PiXYZ)
or reported ambiguous (Magic Hour); a batch stopped by a refused key leaves no spec wrongly
ambiguous; one journal has one live run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import (
    AmbiguousSubmit,
    AsyncClient,
    Cadence,
    JournalBusy,
    MagicHour,
    Result,
    RetryPolicy,
    SubmitPolicy,
)
from pollkit.batch.journal._lock import JournalLock
from pollkit.batch.journal._records import default_journal_path
from pollkit.batch.journal._sqlite import SQLiteJournal
from pollkit.cli import main
from pollkit.client._pixyz import PixyzClient
from pollkit.providers.pixyz import Pixyz
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import free_port

QUICK = Scenario(time_scale=1000.0, queue_delay=(1.0, 3.0), render_time=(5.0, 20.0))
CADENCE = Cadence(initial=0.005, maximum=0.05, timeout=30)
RETRY = RetryPolicy(initial=0.05, maximum=0.2, max_attempts=40, max_elapsed=30)


def image(i: int) -> dict[str, Any]:
    return {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": f"p{i}"}}


def magichour(url: str, key: str, **kwargs: Any) -> AsyncClient:
    return AsyncClient(MagicHour(api_key=key, base_url=url), cadence=CADENCE, retry=RETRY, **kwargs)


async def run_all(client: AsyncClient, specs: list[Any], out: Path, **kwargs: Any) -> list[Result]:
    return [r async for r in client.run(specs, download_directory=out, **kwargs)]


def states(out: Path) -> dict[str, str]:
    with SQLiteJournal(default_journal_path(out)) as journal:
        return {e.key: e.state for e in journal.entries()}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(QUICK) as simulator:
        yield simulator


# -- what is retried, what is not ------------------------------------------------------------


async def test_503_with_retry_after_is_retried_and_creates_one_job(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.inject(status=503, count=3, path_prefix="/v1/ai-image-generator", retry_after=0.05)
    async with magichour(sim.url, sim.api_key) as client:
        (result,) = await run_all(client, [image(0)], tmp_path)
    assert result.ok, result.error
    assert len(sim.stats()["jobs"]) == 1
    assert sim.stats()["requests"]["faults"] == {"5xx": 3}
    assert list(states(tmp_path).values()) == ["done"]


@pytest.mark.parametrize("kind", ["status", "drop_reply"])
async def test_a_500_or_a_lost_reply_after_receipt_stays_ambiguous_on_magic_hour(
    sim: Simulator, tmp_path: Path, kind: str
) -> None:
    sim.inject(status=500, count=1, path_prefix="/v1/ai-image-generator", kind=kind)
    async with magichour(sim.url, sim.api_key) as client:
        (result,) = await run_all(client, [("only", image(0))], tmp_path)
    assert isinstance(result.error, AmbiguousSubmit)
    assert result.state.error is not None
    assert result.state.error.code == "ambiguous_submit"
    assert "magichour has no way to ask" in str(result.error)
    assert states(tmp_path) == {"only": "ambiguous"}
    # The server really did create it when only the reply was lost: resending would pay twice.
    assert len(sim.stats()["jobs"]) == (1 if kind == "drop_reply" else 0)


async def test_a_refused_connection_is_retried_until_the_server_is_up(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it, until the simulator does
    refused = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "never sent" in record.getMessage():
                refused.set()

    watch = Watch(logging.DEBUG)
    logger = logging.getLogger("pollkit.scheduler")
    logger.addHandler(watch)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with magichour(f"http://127.0.0.1:{port}", "key-1") as client:
            batch = asyncio.ensure_future(run_all(client, [image(0)], tmp_path))
            await asyncio.wait_for(refused.wait(), 10)  # the first attempt met a closed port
            async with Simulator(QUICK, api_key="key-1", port=port) as sim:
                (result,) = await batch
                assert result.ok, result.error
                assert len(sim.stats()["jobs"]) == 1
    finally:
        logger.removeHandler(watch)
        logger.setLevel(previous)
    assert list(states(tmp_path).values()) == ["done"]


# -- PiXYZ: an ambiguous submit is looked up by its tag ----------------------------------------


def pixyz_specs(model: Path, count: int) -> list[dict[str, Any]]:
    return [
        {"process": "convert_file", "file": str(model), "params": {"extension": "glb"}}
        for _ in range(count)
    ]


@pytest.mark.parametrize("kind", ["drop_reply", "status"])
async def test_a_pixyz_ambiguous_submit_is_resolved_by_its_tag_without_a_duplicate(
    sim: Simulator, tmp_path: Path, kind: str
) -> None:
    model = tmp_path / "bracket.step"
    model.write_bytes(b"ISO-10303-21;" * 10)
    specs = [(f"part-{i}", spec) for i, spec in enumerate(pixyz_specs(model, 3))]
    # drop_reply: the job exists, its reply was lost. status (a 502 before the handler): it
    # does not, and is sent again once the lookup window shows no job carries its tag.
    sim.inject(status=502, count=1, path_prefix="/pixyz/jobs", method="POST", kind=kind)
    provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"])
    policy = SubmitPolicy(lookup_window=1.0)
    async with PixyzClient(provider, cadence=CADENCE, retry=RETRY, submit=policy) as client:
        results = await run_all(client, specs, tmp_path / "out")
    assert [r.error for r in results] == [None] * 3
    jobs = [j for j in sim.stats()["jobs"] if j["dialect"] == "pixyz"]
    assert len(jobs) == 3  # each spec created once
    assert sorted(r.job_id for r in results) == sorted(j["id"] for j in jobs)
    assert set(states(tmp_path / "out").values()) == {"done"}


async def test_pixyz_names_a_job_with_its_key_only_when_the_spec_does_not(tmp_path: Path) -> None:
    provider = Pixyz(api_key="k")
    spec = {"process": "convert_file", "name": "mine"}
    assert provider.submit_tag(spec, "key-1") == "mine"
    assert provider.tagged(spec, "mine") == spec
    bare = {"process": "convert_file"}
    assert provider.submit_tag(bare, "key-1") == "key-1"
    assert provider.tagged(bare, "key-1") == {"process": "convert_file", "name": "key-1"}


# -- a refused key stops the batch without leaving anything ambiguous ------------------------


def write_batch(path: Path, count: int) -> Path:
    import json

    lines = [json.dumps({"key": f"k{i}", "spec": image(i)}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_wrong_key_then_the_right_one_submits_every_spec_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 40)
    out = tmp_path / "out"
    with ThreadedSimulator(QUICK) as sim:
        argv = ["run", str(batch), "--download-dir", str(out), "--base-url", sim.url]
        assert main([*argv, "--api-key", "bad-key-zq9", "--no-progress"]) == 6
        err = capsys.readouterr().err
        assert "bad-key-zq9" not in err
        assert f"finish the batch with: pollkit run {batch}" in err
        # What was on the wire when the 401 stopped the batch got its real answer: refused.
        assert set(states(out).values()) == {"rejected"}
        assert sim.stats()["jobs"] == []
        assert main([*argv, "--api-key", sim.api_key, "--no-progress"]) == 0
        assert len(sim.stats()["jobs"]) == 40
    assert set(states(out).values()) == {"done"}
    assert "to finish the batch" not in capsys.readouterr().out


def test_an_ambiguous_submit_is_reported_in_cli_terms_with_the_command_that_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 3)
    out = tmp_path / "out"
    with ThreadedSimulator(QUICK) as sim:
        sim.inject(status=502, count=1, path_prefix="/v1/ai-image-generator")
        os.environ["MAGIC_HOUR_API_KEY"] = sim.api_key  # cleared again by the autouse fixture
        argv = ["run", str(batch), "--download-dir", str(out), "--base-url", sim.url]
        assert main([*argv, "--no-progress"]) == 1
        printed = capsys.readouterr().out
        assert "--resubmit-ambiguous" in printed
        assert "resubmit_ambiguous" not in printed
        command = printed.rsplit("to finish the batch: ", 1)[1].strip()
        assert command.endswith("--resubmit-ambiguous")
        assert main([*command.split()[1:], "--no-progress"]) == 0
        assert len(sim.stats()["jobs"]) == 3


# -- one live run per journal ------------------------------------------------------------------


async def test_two_runs_of_one_batch_started_together_one_works_one_refuses(
    sim: Simulator, tmp_path: Path
) -> None:
    specs = [(f"k{i}", image(i)) for i in range(30)]
    async with magichour(sim.url, sim.api_key) as first, magichour(sim.url, sim.api_key) as second:
        outcomes = await asyncio.gather(
            run_all(first, specs, tmp_path),
            run_all(second, specs, tmp_path),
            return_exceptions=True,
        )
    refused = [o for o in outcomes if isinstance(o, JournalBusy)]
    worked = [o for o in outcomes if isinstance(o, list)]
    assert len(refused) == 1
    assert len(worked) == 1
    assert f"pid {os.getpid()}" in str(refused[0])
    assert all(r.ok for r in worked[0])
    assert len(worked[0]) == 30
    assert len(sim.stats()["jobs"]) == 30  # each spec created once


def test_a_busy_journal_refuses_the_cli_run_before_sending_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 3)
    out = tmp_path / "out"
    with ThreadedSimulator(QUICK) as sim, JournalLock(default_journal_path(out)):
        argv = ["run", str(batch), "--download-dir", str(out), "--base-url", sim.url]
        assert main([*argv, "--api-key", sim.api_key]) == 75
        assert sim.stats()["requests"]["total"] == 0
    err = capsys.readouterr().err
    assert f"pid {os.getpid()} on {socket.gethostname()} since " in err
    assert "nothing was sent" in err


def test_a_journal_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    journal = default_journal_path(tmp_path)
    code = (
        "import sys, time; from pollkit.batch.journal._lock import JournalLock;"
        f"lock = JournalLock({str(journal)!r}); print('locked', flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "locked\n"
            with pytest.raises(JournalBusy, match=f"pid {child.pid}"):
                JournalLock(journal)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    with JournalLock(journal):  # the kernel released the dead run's lock
        pass


@pytest.mark.parametrize("value", ["sqlite://user:s3cret@db/x.db", "sqlite:///x.db"])
def test_a_journal_url_pollkit_cannot_open_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 1)
    argv = ["run", str(batch), "--download-dir", str(tmp_path / "out"), "--journal", value]
    assert main([*argv, "--api-key", "k", "--base-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot open a" in err
    assert "s3cret" not in err
    assert not (tmp_path / "out").exists()
    assert not list(Path.cwd().glob("*sqlite*"))


def test_an_unreachable_postgresql_journal_fails_without_showing_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = write_batch(tmp_path / "jobs.jsonl", 1)
    url = "postgresql://user:s3cret@127.0.0.1:9/pollkit"  # nothing listens on port 9
    argv = ["run", str(batch), "--download-dir", str(tmp_path / "out"), "--journal", url]
    assert main([*argv, "--api-key", "k", "--base-url", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "cannot connect to the journal" in err
    assert "postgresql://user:***@127.0.0.1:9/pollkit" in err
    assert "s3cret" not in err
