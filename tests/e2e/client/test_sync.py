"""`Client`, the blocking twin, against a simulator running on its own thread."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollkit import AsyncClient, Client, ConfigurationError, JobFailed, MagicHour, NotFound, Status
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


# Methods of AsyncClient that Client spells differently, or cannot offer, and why.
SYNC_SPELLING = {
    "aclose": "close",  # the blocking close
}
ASYNC_ONLY = {
    # The open aiohttp response it returns can only be read on the client's own loop.
    "open_stream",
}


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_client_has_every_method_of_async_client_with_the_same_signature() -> None:
    blocking = public_methods(Client)
    for name, signature in public_methods(AsyncClient).items():
        if name in ASYNC_ONLY:
            assert name not in blocking
            continue
        twin = SYNC_SPELLING.get(name, name)
        assert twin in blocking, f"Client has no {twin}() for AsyncClient.{name}()"
        # The same parameters, names, kinds and defaults; what is returned differs (a value
        # for a coroutine, an iterator for an async generator).
        assert list(blocking[twin].parameters.values()) == list(signature.parameters.values()), (
            f"Client.{twin}{blocking[twin]} differs from AsyncClient.{name}{signature}"
        )
    assert set(blocking) - {SYNC_SPELLING.get(n, n) for n in public_methods(AsyncClient)} == set()


def test_wait_at_a_fixed_interval(sim: ThreadedSimulator) -> None:
    with make_client(sim) as client:
        submission = client.submit(IMAGE_SPEC)
        seen: list[Status] = []
        sim.clock.advance(100)
        state = client.wait(
            submission.job_id, interval=0.01, on_state=lambda s: seen.append(s.status)
        )
        assert state.status is Status.COMPLETE
        assert seen[-1] is Status.COMPLETE
        with pytest.raises(ConfigurationError, match="cadence or an interval"):
            client.wait(submission.job_id, interval=1.0, cadence=FAST_CADENCE)
        with pytest.raises(ConfigurationError, match=r"Cadence: initial: .*got -1"):
            client.wait(submission.job_id, interval=-1)


def test_download_one_output(sim: ThreadedSimulator, tmp_path: Path) -> None:
    with make_client(sim) as client:
        submission = client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        state = client.wait(submission.job_id)
        saved = client.download(state.outputs[1], tmp_path, name="second.png")
    expected = job_stats(sim.stats(), submission.job_id)["outputs"][1]["sha256"]
    assert saved.path == tmp_path / "second.png"
    assert sha256_file(saved.path) == expected


def test_events_of_a_batch_and_breaking_out(sim: ThreadedSimulator, tmp_path: Path) -> None:
    sim.clock.advance(0)
    with make_client(sim) as client:
        kinds = []
        specs = [{**IMAGE_SPEC, "name": f"image {i}"} for i in range(2)]
        for event in client.events(specs, download_directory=tmp_path, journal=False):
            kinds.append(event.kind)
            if event.kind == "submitted":
                sim.clock.advance(100)
        assert kinds.count("submitted") == 2
        assert kinds.count("done") == 2
        # Leaving early closes the batch on the loop thread; the client stays usable.
        stream = client.events([IMAGE_SPEC], download_directory=tmp_path, journal=False)
        first = next(stream)
        stream.close()
        assert first.kind == "submitted"
        assert client.get(first.job_id or "").job_id == first.job_id
