"""The download engine end to end, through the simulator: resume, restart, refresh, disk errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import AsyncClient, DownloadError, MagicHour, Status, StorageError
from pollkit.cli import main
from pollkit.policies import DownloadPolicy
from pollkit.sim import Simulator, ThreadedSimulator
from tests.helpers import (
    FAST_CADENCE,
    FAST_RETRY,
    FROZEN,
    IMAGE_SPEC,
    VIDEO_SPEC,
    RecordingSink,
    job_stats,
    sha256_file,
)

MiB = 1 << 20
BIG = FROZEN.model_copy(update={"video_bytes": 24 * MiB})


def served(sim: Simulator | ThreadedSimulator) -> dict[str, Any]:
    return dict(sim.stats()["requests"])


def file_statuses(sim: Simulator | ThreadedSimulator) -> dict[str, int]:
    """How often the file route answered each status."""
    requests = sim.stats()["requests"]
    return dict(requests.get("files_by_status", {})) or {
        k: v for k, v in requests["by_status"].items() if k in ("200", "206", "403", "416")
    }


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(BIG) as simulator:
        yield simulator


def client_for(sim: Simulator | ThreadedSimulator, **kwargs: Any) -> AsyncClient:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    return AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY, **kwargs)


async def finished_video(sim: Simulator, client: AsyncClient) -> tuple[str, dict[str, Any]]:
    submission = await client.submit(VIDEO_SPEC)
    sim.clock.advance(100)
    await client.get(submission.job_id)
    (output,) = job_stats(sim.stats(), submission.job_id)["outputs"]
    return submission.job_id, output


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a small tmpfs (root only); skip where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=False)


def test_resume_after_kill_across_processes(tmp_path: Path) -> None:
    with ThreadedSimulator(BIG) as sim:
        job = _submit_video_threaded(sim)
        (output,) = job_stats(sim.stats(), job)["outputs"]
        url = _download_url(sim, job)
        target = tmp_path / output["name"]
        part = target.with_name(target.name + ".part")
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pollkit",
                "download",
                url,
                "--dir",
                str(tmp_path),
                "--limit-rate",
                "8M",
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not (part.exists() and part.stat().st_size >= 4 * MiB):
                assert child.poll() is None, "the child finished before it could be killed"
                assert time.monotonic() < deadline, "the child never wrote 4 MiB"
                time.sleep(0.01)  # waiting for an observable condition, not standing in for one
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait()
        kept = part.stat().st_size
        assert 0 < kept < output["size"]
        assert json.loads(target.with_name(target.name + ".part.json").read_text())["etag"]
        before = served(sim)

        assert main(["download", url, "--dir", str(tmp_path), "--no-progress"]) == 0

        after = served(sim)
        assert sha256_file(target) == output["sha256"]
        assert after["file_bytes_served"] - before["file_bytes_served"] == output["size"] - kept
        assert after["by_status"].get("206", 0) - before["by_status"].get("206", 0) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def _submit_video_threaded(sim: ThreadedSimulator) -> str:
    from pollkit import Client

    with Client(MagicHour(api_key=sim.api_key, base_url=sim.url), cadence=FAST_CADENCE) as client:
        job_id = client.submit(VIDEO_SPEC).job_id
        sim.clock.advance(100)
        assert client.get(job_id).status is Status.COMPLETE
    return job_id


def _download_url(sim: ThreadedSimulator, job_id: str) -> str:
    from pollkit import Client

    with Client(MagicHour(api_key=sim.api_key, base_url=sim.url)) as client:
        url = client.get(job_id).outputs[0].url
    assert url is not None
    return url


async def test_changed_etag_restarts_the_file_cleanly(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        job_id, output = await finished_video(sim, client)
        part = tmp_path / f"{job_id}-0.mp4.part"
        part.write_bytes(b"\xff" * (3 * MiB))  # bytes of an older version of the file
        part.with_name(part.name + ".json").write_text(json.dumps({"etag": '"old-version"'}))
        before = served(sim)
        result = await client.check_result(job_id, download_directory=tmp_path)
    assert result.sha256 == (output["sha256"],)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]
    after = served(sim)
    # If-Range did not match: the server sent the whole file, and nothing old was kept.
    assert after["file_bytes_served"] - before["file_bytes_served"] == output["size"]
    assert after["by_status"].get("206", 0) == before["by_status"].get("206", 0)
    assert not part.exists()


async def test_part_without_a_validator_is_not_trusted(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        job_id, output = await finished_video(sim, client)
        (tmp_path / f"{job_id}-0.mp4.part").write_bytes(b"\x00" * MiB)
        result = await client.check_result(job_id, download_directory=tmp_path)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]


async def test_expired_url_is_refreshed_by_rereading_the_job(tmp_path: Path) -> None:
    scenario = FROZEN.model_copy(update={"url_ttl": 50.0})
    async with Simulator(scenario) as sim, client_for(sim) as client:
        submission = await client.submit(IMAGE_SPEC)

        def expire_after_completion(status: Status) -> None:
            # Each poll moves to the next phase; once complete, the URLs just read expire.
            sim.clock.advance(1000 if status is Status.COMPLETE else 10)

        sink = RecordingSink(on_status=expire_after_completion)
        result = await client.check_result(
            submission.job_id, download_directory=tmp_path, progress=sink
        )
        stats = sim.stats()
    job = job_stats(stats, submission.job_id)
    assert [sha256_file(p) for p in result.downloaded_paths] == [
        o["sha256"] for o in job["outputs"]
    ]
    assert stats["requests"]["by_status"]["403"] == 2  # one expired URL per output
    assert job["status_requests"] == result.polls + 2  # one re-read of the job per output


async def test_full_disk_keeps_the_part_and_a_later_run_resumes(
    sim: Simulator, tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    disk = tmpfs("size=6m")
    async with client_for(sim) as client:
        job_id, output = await finished_video(sim, client)
        with pytest.raises(StorageError, match="No space left on device") as info:
            await client.check_result(job_id, download_directory=disk)
        part = disk / f"{job_id}-0.mp4.part"
        assert info.value.path == str(part)
        kept = part.stat().st_size
        assert kept > 0
        remount = ["mount", "-o", "remount,size=64m", str(disk)]
        await asyncio.to_thread(subprocess.run, remount, check=True)
        before = served(sim)
        result = await client.check_result(job_id, download_directory=disk)
    assert sha256_file(result.downloaded_paths[0]) == output["sha256"]
    assert served(sim)["file_bytes_served"] - before["file_bytes_served"] == output["size"] - kept


async def test_unwritable_part_fails_clearly_and_loses_nothing_else(tmp_path: Path) -> None:
    async with Simulator(FROZEN) as sim, client_for(sim) as client:
        submission = await client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        # The first output's .part is a window onto a full disk.
        (tmp_path / f"{submission.job_id}-0.png.part").symlink_to("/dev/full")
        with pytest.raises(StorageError, match="No space left on device"):
            await client.check_result(submission.job_id, download_directory=tmp_path)
        (second,) = [
            o
            for o in job_stats(sim.stats(), submission.job_id)["outputs"]
            if o["name"].endswith("1.png")
        ]
    assert sha256_file(tmp_path / f"{submission.job_id}-1.png") == second["sha256"]


async def test_read_only_directory_fails_clearly(tmpfs: Callable[[str], Path]) -> None:
    disk = tmpfs("size=1m,ro")
    async with Simulator(FROZEN) as sim, client_for(sim) as client:
        submission = await client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        with pytest.raises(StorageError, match="Read-only file system"):
            await client.check_result(submission.job_id, download_directory=disk / "out")


@pytest.mark.parametrize(
    ("existing", "expected_name", "mine_kept"),
    [
        ("rename", "{job}-0 (1).png", True),
        ("skip", "{job}-0.png", True),
        ("overwrite", "{job}-0.png", False),
    ],
)
async def test_existing_file_policies(
    tmp_path: Path, existing: str, expected_name: str, mine_kept: bool
) -> None:
    async with Simulator(FROZEN) as sim:
        policy = DownloadPolicy(existing=existing)  # type: ignore[arg-type]
        async with client_for(sim, download=policy) as client:
            submission = await client.submit(IMAGE_SPEC | {"image_count": 1})
            sim.clock.advance(100)
            mine = tmp_path / f"{submission.job_id}-0.png"
            mine.write_bytes(b"my own work")
            result = await client.check_result(submission.job_id, download_directory=tmp_path)
            (output,) = job_stats(sim.stats(), submission.job_id)["outputs"]
    (path,) = result.downloaded_paths
    assert path.name == expected_name.format(job=submission.job_id)
    assert (mine.read_bytes() == b"my own work") is mine_kept
    if existing == "skip":
        assert result.sha256 == (sha256_file(mine),)  # what is on disk, not what was offered
    else:
        assert sha256_file(path) == output["sha256"] == result.sha256[0]
    assert not list(tmp_path.glob("*.part*"))


async def test_identical_file_is_kept_not_rewritten(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        job_id, _ = await finished_video(sim, client)
        first = await client.check_result(job_id, download_directory=tmp_path)
        stamp = first.downloaded_paths[0].stat().st_mtime_ns
        again = await client.check_result(job_id, download_directory=tmp_path)
    assert again.downloaded_paths == first.downloaded_paths
    assert again.downloaded_paths[0].stat().st_mtime_ns == stamp


async def test_bandwidth_cap_and_progress(tmp_path: Path) -> None:
    scenario = FROZEN.model_copy(update={"video_bytes": 3 * MiB})
    async with (
        Simulator(scenario) as sim,
        client_for(sim, download=DownloadPolicy(bandwidth=4 * MiB)) as client,
    ):
        job_id, output = await finished_video(sim, client)
        sink = RecordingSink()
        started = time.monotonic()
        await client.check_result(job_id, download_directory=tmp_path, progress=sink)
        elapsed = time.monotonic() - started
    # 3 MiB at 4 MiB/s with a one-chunk burst: at least 2 MiB had to wait for tokens.
    assert elapsed >= 0.5
    assert sink.bytes == sink.total == output["size"]
    assert sink.files == {f"{job_id}-0.mp4": (output["size"], output["size"])}


def test_download_command_list_failures_and_sha256sum_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ThreadedSimulator(FROZEN) as sim:
        job = _submit_video_threaded(sim)
        url = _download_url(sim, job)
        listing = tmp_path / "urls.txt"
        listing.write_text(f"# outputs\n{url}\n\n{sim.url}/_sim/files/{job}/missing.bin\n")
        code = main(
            ["download", "-i", str(listing), "--dir", str(tmp_path / "out"), "--no-progress"]
        )
        (output,) = job_stats(sim.stats(), job)["outputs"]
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.split() == [output["sha256"], str(tmp_path / "out" / output["name"])]
    assert "1 of 2 files failed" in captured.err
    assert "missing.bin" in captured.err
    assert "sig=" not in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [output["name"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["download", "--dir", "x"], "no URL given"),
        (["download", "ftp://h/f", "--dir", "x"], "not an http(s) URL"),
        (["download", "http://h/f", "--dir", "x", "--limit-rate", "fast"], "not a positive rate"),
        (["download", "http://h/f", "--dir", "x", "--concurrency", "0"], "--concurrency"),
        (["download", "-i", "/nonexistent/list", "--dir", "x"], "No such file"),
    ],
)
def test_download_command_bad_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_duplicate_and_nameless_urls_get_distinct_stable_names() -> None:
    from pollkit.download._downloader import names_for_urls

    names = names_for_urls(
        ["http://h/a/out.png?x=1", "http://h/b/out.png", "http://h/", "http://h/.."]
    )
    assert names[:2] == ["out.png", "out (1).png"]
    assert names[2].startswith("download-")
    assert names[3].startswith("download-")
    assert names[2] != names[3]
    assert names_for_urls(["http://h/"]) == [names[2]]
    assert os.sep not in "".join(names)


async def test_name_template_with_provider_fields(tmp_path: Path) -> None:
    template = "{project_name}-{type}-{index}{ext}"
    async with (
        Simulator(FROZEN) as sim,
        client_for(sim, download=DownloadPolicy(name_template=template)) as client,
    ):
        submission = await client.submit(
            IMAGE_SPEC | {"name": "harbour study/v2", "image_count": 1}
        )
        sim.clock.advance(100)
        result = await client.check_result(submission.job_id, download_directory=tmp_path)
        bad = DownloadPolicy(name_template="{job_id}-{nope}{ext}")
        known = "ext, index, job_id, kind, name, project_name, type"
        async with client_for(sim, download=bad) as strict:
            with pytest.raises(DownloadError, match=rf"no field 'nope' \(fields: {known}\)"):
                await strict.check_result(submission.job_id, download_directory=tmp_path)
    assert [p.name for p in result.downloaded_paths] == ["harbour_study_v2-AI_IMAGE-0.png"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "must not be empty"),
        ("{0}{ext}", "plain names"),
        ("{a.b}", "plain names"),
        ("{", "malformed"),
    ],
)
def test_bad_templates_are_refused_up_front(template: str, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        DownloadPolicy(name_template=template)
