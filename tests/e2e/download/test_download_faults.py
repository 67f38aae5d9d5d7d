"""Download faults end to end: every fault the simulator can inject is survived byte-exact,
resuming from the bytes already on disk wherever the server allows it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import AsyncClient, MagicHour, Output, RetryPolicy, Status, UnsafePath
from pollkit.cli import main
from pollkit.download import _downloader as download
from pollkit.download._downloader import Downloader
from pollkit.download._partfile import PartFile
from pollkit.policies import DownloadPolicy
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from pollkit.sim.transfer._archives import archive_info
from pollkit.sim.transfer._blobs import blob_sha256
from pollkit.transport._http import Transport
from tests.helpers import (
    FAST_CADENCE,
    FAST_RETRY,
    FROZEN,
    VIDEO_SPEC,
    RecordingSink,
    job_stats,
    sha256_file,
)

MiB = 1 << 20
VIDEO = FROZEN.model_copy(update={"video_bytes": 24 * MiB})
# When a body breaks off, the bytes still in flight are lost and fetched again: what the kernel
# had queued for the socket (a reset drops it; on loopback, autotuning lets it grow to several
# MiB while the writer is busy) and what aiohttp buffered. Bytes on disk never are: a restart
# from zero would cost half the file again (the simulator breaks bodies halfway), twice this.
REFETCH_BOUND = 6 * MiB


@pytest.fixture(params=["aiohttp", "sink"])
def receiver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test twice: the body read from aiohttp's stream, and taken off it by
    `pollkit.transport._bodysink` (as every body from `TAKE_OVER_FROM` on is)."""
    threshold = 0 if request.param == "sink" else 1 << 62
    monkeypatch.setattr(download, "TAKE_OVER_FROM", threshold)
    return str(request.param)


def counters(sim: Simulator | ThreadedSimulator) -> dict[str, Any]:
    return dict(sim.stats()["requests"])


async def video_job(sim: Simulator, client: AsyncClient) -> tuple[str, dict[str, Any]]:
    submission = await client.submit(VIDEO_SPEC)
    sim.clock.advance(100)
    assert (await client.get(submission.job_id)).status is Status.COMPLETE
    (output,) = job_stats(sim.stats(), submission.job_id)["outputs"]
    return submission.job_id, output


def client_for(sim: Simulator, **kwargs: Any) -> AsyncClient:
    return AsyncClient(
        MagicHour(api_key=sim.api_key, base_url=sim.url),
        cadence=FAST_CADENCE,
        retry=FAST_RETRY,
        **kwargs,
    )


@pytest.mark.usefixtures("receiver")
@pytest.mark.parametrize("kind", ["truncate", "reset_mid"])
async def test_broken_body_resumes_from_the_bytes_received(kind: str, tmp_path: Path) -> None:
    async with Simulator(VIDEO) as sim, client_for(sim) as client:
        job_id, output = await video_job(sim, client)
        before = counters(sim)
        sim.inject(kind=kind, count=1, path_prefix="/_sim/files/")
        result = await client.check_result(job_id, download_directory=tmp_path)
        after = counters(sim)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]
    assert after["download_faults"][kind] == 1
    # The retry asked only for the rest (one 206).
    assert after["by_status"].get("206", 0) - before["by_status"].get("206", 0) == 1
    sent = after["file_bytes_served"] - before["file_bytes_served"]
    assert output["size"] <= sent <= output["size"] + REFETCH_BOUND


@pytest.mark.usefixtures("receiver")
async def test_stalled_body_is_abandoned_and_the_range_retried(tmp_path: Path) -> None:
    async with (
        Simulator(VIDEO) as sim,
        client_for(sim, download=DownloadPolicy(stall_timeout=0.2)) as client,
    ):
        job_id, output = await video_job(sim, client)
        sim.inject(kind="stall", count=1, path_prefix="/_sim/files/", stall_seconds=5)
        started = time.monotonic()
        result = await client.check_result(job_id, download_directory=tmp_path)
        elapsed = time.monotonic() - started
        stats = counters(sim)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]
    assert stats["download_faults"]["stall"] == 1
    assert stats["by_status"]["206"] == 1
    assert elapsed < 5, "the stall was waited out instead of detected"


async def test_a_cancel_during_a_write_waits_for_it_to_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write already in its thread cannot be stopped: the cancelled download ends only once
    it landed, so the `.part` a resume measures does not grow after it."""
    monkeypatch.setattr(download, "TAKE_OVER_FROM", 1 << 62)  # aiohttp's pieces
    entered, release = threading.Event(), threading.Event()
    original = PartFile.write

    def held(self: PartFile, pieces: list[bytes]) -> int:
        if self.written >= 4 * MiB and not entered.is_set():
            entered.set()
            release.wait(30)
        return original(self, pieces)

    monkeypatch.setattr(PartFile, "write", held)
    size = 16 * MiB
    async with Simulator(FROZEN) as sim, client_for(sim) as client:
        url = f"{sim.url}/_sim/blobs/big.bin?size={size}"
        task = asyncio.create_task(client.download(Output(url=url), tmp_path, name="big.bin"))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, entered.wait, 30)
        task.cancel()
        # Still waiting for the held write (a second is ample for a cancel to go through).
        done, _ = await asyncio.wait({task}, timeout=1.0)
        assert not done, "the cancelled download ended before its write landed"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        part = tmp_path / "big.bin.part"
        kept = part.stat().st_size
        assert kept > 4 * MiB  # the held write is in
        saved = await client.download(Output(url=url), tmp_path, name="big.bin")
    assert saved.sha256 == blob_sha256(size, 0)


@pytest.mark.usefixtures("receiver")
async def test_cancelled_mid_body_keeps_every_byte_received_and_resumes(tmp_path: Path) -> None:
    """Cancelled while the server stalls halfway: the task ends at once, the bytes that reached
    the disk stay in the `.part`, and the rerun asks for exactly the rest."""
    size = 24 * MiB
    async with Simulator(FROZEN) as sim, client_for(sim) as client:
        url = f"{sim.url}/_sim/blobs/big.bin?size={size}"
        sim.inject(kind="stall", count=1, path_prefix="/_sim/blobs/", stall_seconds=60)
        halfway = asyncio.Event()

        class Watch(RecordingSink):
            def file_progress(self, name: str, done: int, total: int | None) -> None:
                super().file_progress(name, done, total)
                if done >= 8 * MiB:
                    halfway.set()

        task = asyncio.create_task(
            client.download(Output(url=url), tmp_path, name="big.bin", progress=Watch())
        )
        await asyncio.wait_for(halfway.wait(), 30)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 5, "the cancellation waited for the stalled server"
        kept = (tmp_path / "big.bin.part").stat().st_size
        assert 8 * MiB <= kept <= size // 2
        before = counters(sim)
        saved = await client.download(Output(url=url), tmp_path, name="big.bin")
        after = counters(sim)
    assert saved.sha256 == sha256_file(saved.path) == blob_sha256(size, 0)
    assert after["blob_bytes_served"] - before["blob_bytes_served"] == size - kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin"]


@pytest.mark.usefixtures("receiver")
@pytest.mark.parametrize(
    ("switch", "why"),
    [
        ({"range_support": False}, "the server ignores Range"),
        ({"etag_changes": True}, "the file changed"),
    ],
)
async def test_resume_refused_restarts_cleanly(
    switch: dict[str, Any], why: str, tmp_path: Path
) -> None:
    async with Simulator(VIDEO.model_copy(update=switch)) as sim, client_for(sim) as client:
        job_id, output = await video_job(sim, client)
        before = counters(sim)
        sim.inject(kind="truncate", count=1, path_prefix="/_sim/files/")
        result = await client.check_result(job_id, download_directory=tmp_path)
        after = counters(sim)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"], why
    assert after["by_status"].get("206", 0) == before["by_status"].get("206", 0)  # never a range
    assert after["file_bytes_served"] - before["file_bytes_served"] > output["size"]  # restarted


@pytest.mark.usefixtures("receiver")
async def test_url_expiring_between_attempts_is_refreshed_and_the_range_continues(
    tmp_path: Path,
) -> None:
    async with (
        Simulator(VIDEO.model_copy(update={"url_ttl": 50.0})) as sim,
        client_for(sim) as client,
    ):
        job_id, output = await video_job(sim, client)
        sim.inject(kind="truncate", count=1, path_prefix="/_sim/files/")

        class ExpireAfterFirstBytes(RecordingSink):
            def file_progress(self, name: str, done: int, total: int | None) -> None:
                super().file_progress(name, done, total)
                if done < (total or 0):
                    sim.clock.advance(1000)  # the URL dies while the transfer is broken off

        before = counters(sim)
        result = await client.check_result(
            job_id, download_directory=tmp_path, progress=ExpireAfterFirstBytes()
        )
        after = counters(sim)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]
    assert after["by_status"]["403"] - before["by_status"].get("403", 0) == 1
    assert after["by_status"]["206"] - before["by_status"].get("206", 0) == 1
    # The truncated half plus the rest is one file, give or take what aiohttp still buffered.
    sent = after["file_bytes_served"] - before["file_bytes_served"]
    assert output["size"] <= sent <= output["size"] + REFETCH_BOUND


@pytest.mark.usefixtures("receiver")
def test_random_faults_at_volume_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flaky = Scenario(truncate_rate=0.2, reset_rate=0.1, stall_rate=0.1, stall_seconds=2.0, seed=3)
    sizes = [MiB * (1 + i % 3) + i for i in range(24)]
    with ThreadedSimulator(flaky) as sim:
        urls = [f"{sim.url}/_sim/blobs/blob-{i}.bin?size={n}&seed={i}" for i, n in enumerate(sizes)]
        argv = [
            "download",
            *urls,
            "--dir",
            str(tmp_path),
            "--stall-timeout",
            "0.3",
            "--retries",
            "8",
        ]
        code = main([*argv, "--no-progress"])
        faults = sim.stats()["requests"]["download_faults"]
    assert code == 0, capsys.readouterr().err
    assert sum(faults.values()) >= 3, (
        f"the scenario injected too few faults to prove anything: {faults}"
    )
    printed = dict(reversed(line.split("  ", 1)) for line in capsys.readouterr().out.splitlines())
    for i, size in enumerate(sizes):
        path = tmp_path / f"blob-{i}.bin"
        assert printed[str(path)] == sha256_file(path) == blob_sha256(size, i)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"blob-{i}.bin" for i in range(len(sizes))
    )


@pytest.fixture
async def archive_sim() -> AsyncIterator[tuple[Simulator, Downloader]]:
    async with Simulator(FROZEN) as sim:
        transport = Transport(retry=RetryPolicy(max_attempts=2, initial=0.001))
        try:
            yield (
                sim,
                Downloader(
                    transport, DownloadPolicy(extract_archives=True, max_extract_bytes=64 * MiB)
                ),
            )
        finally:
            await transport.aclose()


async def test_archive_output_is_downloaded_and_extracted(
    archive_sim: tuple[Simulator, Downloader], tmp_path: Path
) -> None:
    sim, downloader = archive_sim
    output = Output(url=f"{sim.url}/_sim/archives/safe.zip", is_archive=True)
    saved = await downloader.fetch(output, tmp_path, job_id="j1")
    assert saved.path == tmp_path / "j1-0.zip"
    info = archive_info("safe")
    assert saved.sha256 == info.sha256
    extracted = sorted(p.relative_to(tmp_path / "j1-0").as_posix() for p in saved.extracted)
    assert extracted == sorted(e for e in info.entries if not e.endswith("/"))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("traversal", "'../evil.txt' leaves the target"),
        ("absolute", "'/tmp/pollkit-evil.txt' has an absolute path"),
        ("symlink", "is a symbolic link"),
        ("bomb", "expands"),
        ("ratio", "expands"),
        ("lying", "corrupt"),
    ],
)
async def test_hostile_archive_is_refused_and_nothing_escapes(
    archive_sim: tuple[Simulator, Downloader], tmp_path: Path, kind: str, message: str
) -> None:
    sim, downloader = archive_sim
    target = tmp_path / "jobs"
    output = Output(url=f"{sim.url}/_sim/archives/{kind}.zip", is_archive=True)
    with pytest.raises(Exception, match=message) as info:
        await downloader.fetch(output, target, job_id="j1")
    assert isinstance(info.value, UnsafePath) or kind == "lying"
    # The archive itself was saved (it is the job's output); nothing was extracted from it.
    assert sorted(p.name for p in target.iterdir()) == ["j1-0.zip"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"]
    assert not Path("/tmp/pollkit-evil.txt").exists()
