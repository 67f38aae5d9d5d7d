"""`check_result` end to end, against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pollkit import (
    AsyncClient,
    AuthenticationError,
    JobCanceled,
    JobFailed,
    MagicHour,
    NotFound,
    PollTimeout,
    Status,
    UnsupportedOperation,
)
from pollkit.sim import Simulator
from tests.helpers import (
    FAST_CADENCE,
    FAST_RETRY,
    FROZEN,
    IMAGE_SPEC,
    VIDEO_SPEC,
    RecordingSink,
    assert_valid_png,
    job_stats,
    sha256_file,
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FROZEN) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AsyncClient]:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    async with AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as c:
        yield c


def advance_on_each_status(sim: Simulator, seconds: float = 10.0) -> RecordingSink:
    """A sink that moves the simulated clock forward once per poll, so each poll sees the next
    phase: queued, then rendering, then the outcome."""
    return RecordingSink(on_status=lambda _: sim.clock.advance(seconds))


async def test_image_job_goes_queued_rendering_complete_and_lands_byte_exact(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(IMAGE_SPEC)
    sink = advance_on_each_status(sim)
    out = tmp_path / "new" / "dir"

    result = await client.check_result(
        submission.job_id, download_directory=out, kind=submission.kind, progress=sink
    )

    assert sink.statuses == [Status.QUEUED, Status.RENDERING, Status.COMPLETE]
    assert result.ok
    assert result.polls == 3
    served = job_stats(sim.stats(), submission.job_id)
    assert served["status_requests"] == 3
    assert [p.name for p in result.downloaded_paths] == [
        f"{submission.job_id}-0.png",
        f"{submission.job_id}-1.png",
    ]
    expected = [o["sha256"] for o in served["outputs"]]
    assert [sha256_file(p) for p in result.downloaded_paths] == expected
    assert list(result.sha256) == expected
    assert sink.bytes == sink.total == sum(o["size"] for o in served["outputs"])
    for path in result.downloaded_paths:
        assert assert_valid_png(path.read_bytes()) == (256, 256)
    assert not list(out.glob("*.part"))
    assert result.finished_at is not None
    assert result.finished_at == result.state.observed_at


async def test_video_job_downloads_one_file_byte_exact(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(VIDEO_SPEC)
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, progress=advance_on_each_status(sim)
    )
    (path,) = result.downloaded_paths
    (output,) = job_stats(sim.stats(), submission.job_id)["outputs"]
    assert path.name == f"{submission.job_id}-0.mp4"
    assert sha256_file(path) == output["sha256"]
    assert path.stat().st_size == output["size"]
    assert path.read_bytes()[4:8] == b"ftyp"


async def test_error_job_is_returned_then_raised_on_request(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    sim.plan_next(outcome="error")
    submission = await client.submit(IMAGE_SPEC)
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, progress=advance_on_each_status(sim)
    )
    assert result.status is Status.ERROR
    assert not result.ok
    assert result.downloaded_paths == ()
    assert result.state.error is not None
    assert result.state.error.code == "render_failed"
    with pytest.raises(
        JobFailed, match=rf"magichour job {submission.job_id} failed: render_failed"
    ) as info:
        result.raise_for_status()
    assert info.value.state is result.state
    assert list(tmp_path.iterdir()) == []


async def test_canceled_job(sim: Simulator, client: AsyncClient, tmp_path: Path) -> None:
    submission = await client.submit(VIDEO_SPEC)

    def cancel_once_rendering(status: Status) -> None:
        if status is Status.QUEUED:
            sim.clock.advance(10)  # to rendering
        elif status is Status.RENDERING:
            sim.cancel(submission.job_id)  # the user cancels in the web app

    sink = RecordingSink(on_status=cancel_once_rendering)
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, progress=sink
    )
    assert sink.statuses == [Status.QUEUED, Status.RENDERING, Status.CANCELED]
    assert result.downloaded_paths == ()
    with pytest.raises(JobCanceled, match="was canceled"):
        result.raise_for_status()


async def test_wrong_key_fails_at_once_without_retries(sim: Simulator, tmp_path: Path) -> None:
    wrong = "mhk_wrong_key_123456"
    async with AsyncClient(MagicHour(api_key=wrong, base_url=sim.url), retry=FAST_RETRY) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.check_result("cabc", download_directory=tmp_path, kind="image")
    assert info.value.status_code == 401
    assert info.value.server_message == "Unauthorized"
    assert wrong not in str(info.value)
    assert sim.api_key not in str(info.value)
    assert sim.stats()["requests"]["by_route"] == {"GET /v1/image-projects/{id}": 1}


async def test_unknown_id_is_not_found_at_once(sim: Simulator, client: AsyncClient) -> None:
    with pytest.raises(NotFound, match="get project job cnope: HTTP 404: Not Found"):
        await client.check_result("cnope", kind="video")
    assert sim.stats()["requests"]["total"] == 1


async def test_burst_of_500s_is_survived(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(IMAGE_SPEC)
    sim.inject(status=500, count=3, path_prefix="/v1/image-projects/")
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, progress=advance_on_each_status(sim)
    )
    assert result.ok
    assert len(result.downloaded_paths) == 2
    stats = sim.stats()
    assert stats["requests"]["injected"] == 3
    assert stats["requests"]["by_status"]["500"] == 3


async def test_429_retry_after_is_honoured(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(IMAGE_SPEC)
    sim.inject(status=429, count=1, path_prefix="/v1/image-projects/", retry_after=0.2)
    started = time.monotonic()
    result = await client.check_result(
        submission.job_id, download_directory=tmp_path, progress=advance_on_each_status(sim)
    )
    # The retry policy alone would have retried after ~1 ms: the wait came from Retry-After.
    assert time.monotonic() - started >= 0.2
    assert result.ok
    assert sim.stats()["requests"]["by_status"]["429"] == 1


async def test_deadline_raises_poll_timeout_with_the_last_state(
    sim: Simulator, client: AsyncClient
) -> None:
    sim.plan_next(outcome="draft")
    submission = await client.submit(IMAGE_SPEC)
    with pytest.raises(PollTimeout) as info:
        await client.check_result(submission.job_id, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert info.value.state is not None
    assert info.value.state.status is Status.DRAFT
    assert str(info.value) == (
        f"wait job {submission.job_id}: not finished after 0.1 s (last status draft)"
    )
    # The cadence's last poll lands on the deadline: more than one poll was made, and no more
    # than the cadence allows in 0.1 s (first poll, then waits growing from 2 ms).
    polls = job_stats(sim.stats(), submission.job_id)["status_requests"]
    assert 2 <= polls <= 40


async def test_no_wait_reads_once_and_downloads_nothing(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(IMAGE_SPEC)
    result = await client.check_result(
        submission.job_id, wait_for_completion=False, download_directory=tmp_path
    )
    assert (result.status, result.polls, result.downloaded_paths) == (Status.QUEUED, 1, ())
    assert result.finished_at is None


async def test_two_jobs_with_the_same_url_basename_do_not_collide(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    assert sim.scenario.basename == "per_project"  # both URLs end in /output-0.png
    one = await client.submit(IMAGE_SPEC | {"image_count": 1})
    two = await client.submit(IMAGE_SPEC | {"image_count": 1})
    sim.clock.advance(100)
    first = await client.check_result(one.job_id, download_directory=tmp_path)
    second = await client.check_result(two.job_id, download_directory=tmp_path)
    assert first.state.outputs[0].name == second.state.outputs[0].name == "output-0.png"
    assert first.downloaded_paths[0] != second.downloaded_paths[0]
    assert first.sha256 != second.sha256
    assert {sha256_file(p) for p in (*first.downloaded_paths, *second.downloaded_paths)} == {
        *first.sha256,
        *second.sha256,
    }


async def test_existing_different_file_is_never_overwritten(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    submission = await client.submit(IMAGE_SPEC | {"image_count": 1})
    sim.clock.advance(100)
    mine = tmp_path / f"{submission.job_id}-0.png"
    mine.write_bytes(b"my own work")

    first = await client.check_result(submission.job_id, download_directory=tmp_path)
    again = await client.check_result(submission.job_id, download_directory=tmp_path)

    assert mine.read_bytes() == b"my own work"
    assert first.downloaded_paths == (tmp_path / f"{submission.job_id}-0 (1).png",)
    assert again.downloaded_paths == first.downloaded_paths  # identical bytes: reused
    assert {p.name for p in tmp_path.iterdir()} == {mine.name, first.downloaded_paths[0].name}


async def test_download_directory_that_is_a_file_is_a_clear_error(
    sim: Simulator, client: AsyncClient, tmp_path: Path
) -> None:
    from pollkit import StorageError

    submission = await client.submit(IMAGE_SPEC)
    sim.clock.advance(100)
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    with pytest.raises(StorageError, match="cannot use download directory") as info:
        await client.check_result(submission.job_id, download_directory=blocker)
    assert info.value.path == str(blocker)


async def test_delete_and_cancel(sim: Simulator, client: AsyncClient) -> None:
    submission = await client.submit(IMAGE_SPEC)
    with pytest.raises(UnsupportedOperation, match="no cancel endpoint"):
        await client.cancel(submission.job_id)
    sim.clock.advance(100)
    await client.delete(submission.job_id, kind="image")
    state = await client.get(submission.job_id)
    assert state.status is Status.COMPLETE
    assert state.raw["enabled"] is False
    assert job_stats(sim.stats(), submission.job_id)["deleted"] is True


async def test_no_secret_reaches_a_log_record_or_an_error(
    client: AsyncClient, sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "mhk_wrong_key_987654"
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        submission = await client.submit(IMAGE_SPEC)
        sim.inject(status=503, count=2, path_prefix="/v1/image-projects/")
        await client.check_result(
            submission.job_id, download_directory=tmp_path, progress=advance_on_each_status(sim)
        )
        with pytest.raises(NotFound) as missing:
            await client.check_result("cmissing", kind="image")
        async with AsyncClient(MagicHour(api_key=wrong, base_url=sim.url)) as intruder:
            with pytest.raises(AuthenticationError) as refused:
                await intruder.get("cx", kind="image")
        for error in (missing.value, refused.value):
            seen += [str(error), repr(error)]
    seen += [r.getMessage() for r in caplog.records]
    assert any("GET" in line for line in seen), "debug logging recorded the requests"
    for line in seen:
        assert sim.api_key not in line
        assert wrong not in line
        assert "sig=" not in line
        assert "expires=" not in line


async def test_many_jobs_concurrently(sim: Simulator, client: AsyncClient, tmp_path: Path) -> None:
    submissions = [await client.submit(IMAGE_SPEC | {"image_count": 1}) for _ in range(8)]
    sim.clock.advance(100)
    results = await asyncio.gather(
        *(
            client.check_result(s.job_id, download_directory=tmp_path, kind=s.kind)
            for s in submissions
        )
    )
    assert all(r.ok for r in results)
    assert len({p for r in results for p in r.downloaded_paths}) == 8
