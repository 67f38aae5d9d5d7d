"""`Client`, the blocking twin, against a simulator running on its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollkit import Client, ConfigurationError, JobFailed, MagicHour, NotFound, Status
from pollkit.sim import ThreadedSimulator
from tests.helpers import FAST_CADENCE, FAST_RETRY, FROZEN, IMAGE_SPEC, job_stats, sha256_file


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(FROZEN) as simulator:
        yield simulator


def make_client(sim: ThreadedSimulator) -> Client:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    return Client(provider, cadence=FAST_CADENCE, retry=FAST_RETRY)


def test_blocking_check_result(sim: ThreadedSimulator, tmp_path: Path) -> None:
    with make_client(sim) as client:
        submission = client.submit(IMAGE_SPEC)
        assert client.get(submission.job_id).status is Status.QUEUED
        sim.clock.advance(100)
        result = client.check_result(submission.job_id, download_directory=tmp_path)
    expected = [o["sha256"] for o in job_stats(sim.stats(), submission.job_id)["outputs"]]
    assert [sha256_file(p) for p in result.downloaded_paths] == expected


async def test_works_inside_a_running_event_loop(sim: ThreadedSimulator, tmp_path: Path) -> None:
    # This coroutine runs on pytest's event loop, as a Jupyter cell runs on the kernel's:
    # asyncio.run() would refuse here, the blocking client must not.
    asyncio.get_running_loop()
    with make_client(sim) as client:
        submission = client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        result = client.check_result(submission.job_id, download_directory=tmp_path)
        sim.plan_next(outcome="error")
        failing = client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        with pytest.raises(JobFailed):
            client.check_result(failing.job_id, download_directory=tmp_path).raise_for_status()
    assert result.ok
    assert len(result.downloaded_paths) == 2


def test_errors_cross_the_thread_unchanged(sim: ThreadedSimulator) -> None:
    with make_client(sim) as client, pytest.raises(NotFound, match="job cnone"):
        client.get("cnone", kind="image")


def test_close_stops_the_loop_thread_and_refuses_later_calls(sim: ThreadedSimulator) -> None:
    before = {t.name for t in threading.enumerate()}
    client = make_client(sim)
    client.get(client.submit(IMAGE_SPEC).job_id)
    client.close()
    client.close()  # idempotent
    assert {t.name for t in threading.enumerate()} <= before
    with pytest.raises(ConfigurationError, match="closed"):
        client.get("cx")
