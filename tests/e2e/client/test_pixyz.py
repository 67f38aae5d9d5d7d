"""PiXYZ end to end: `AsyncClient`/`Client` + `Pixyz` + `PixyzClient` against the simulator."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pollkit import (
    AuthenticationError,
    Cadence,
    Client,
    ConfigurationError,
    InvalidRequest,
    PollTimeout,
    ServerError,
    Status,
    UnsafePath,
)
from pollkit.client._pixyz import PixyzClient
from pollkit.policies import DownloadPolicy
from pollkit.providers.base import FormPart, Request
from pollkit.providers.pixyz import Pixyz
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from pollkit.sim.pixyz._processes import metadata_counters
from tests.helpers import FAST_CADENCE, FAST_RETRY, assert_valid_png, job_stats, sha256_file

# Jobs take 10–40 ms; packing an archive 200 ms, long next to the 425 cadence below.
QUICK = Scenario(time_scale=1000.0, queue_delay=10.0, render_time=30.0, archive_delay=200.0)
NOT_READY = Cadence(initial=0.01, maximum=0.02, jitter=0.0, timeout=10)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(QUICK) as simulator:
        yield simulator


def client_for(sim: Simulator, **kwargs: Any) -> PixyzClient:
    download = kwargs.pop("download", DownloadPolicy(not_ready=NOT_READY))
    provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"], **kwargs)
    return PixyzClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY, download=download)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "bracket.step"
    path.write_bytes(b"ISO-10303-21;" * 1000)
    return path


def thumbs(model: Path, **extra: Any) -> dict[str, Any]:
    return {
        "process": "generate_thumbnails",
        "file": str(model),
        "params": {"width": 9, "height": 5},
    } | extra


def script(tmp_path: Path, marker: str) -> str:
    path = tmp_path / f"job-{uuid.uuid4().hex[:6]}.py"
    path.write_text(f"# pollkit-sim: {marker}\ndef main(**params):\n    return params\n")
    return str(path)


async def test_files_mode_downloads_every_listed_file_byte_exact(
    sim: Simulator, model: Path, tmp_path: Path
) -> None:
    async with client_for(sim) as client:
        job = await client.submit(thumbs(model))
        result = await client.check_result(job.job_id, download_directory=tmp_path / "out")
    assert result.ok
    served = {o["name"]: o["sha256"] for o in job_stats(sim.stats(), job.job_id)["outputs"]}
    assert len(result.downloaded_paths) == 6
    assert [sha256_file(p) for p in result.downloaded_paths] == list(served.values())
    assert [p.suffix for p in result.downloaded_paths] == [".png"] * 4 + [".glb", ".json"]
    assert assert_valid_png(result.downloaded_paths[0].read_bytes()) == (9, 5)


async def test_archive_mode_waits_through_425s_and_extracts(
    sim: Simulator, model: Path, tmp_path: Path
) -> None:
    policy = DownloadPolicy(extract_archives=True, not_ready=NOT_READY)
    async with client_for(sim, outputs="archive", download=policy) as client:
        job = await client.submit(thumbs(model))
        result = await client.check_result(job.job_id, download_directory=tmp_path)
        metrics = await client.metrics()
    (archive,) = result.downloaded_paths
    assert archive.name == f"{job.job_id}-0.zip"
    assert sorted(p.name for p in result.extracted_paths) == sorted(
        ["iso.png", "x.png", "y.png", "z.png", "preview.glb", "metadata.json"]
    )
    served = {o["name"]: o["sha256"] for o in job_stats(sim.stats(), job.job_id)["outputs"]}
    assert {p.name: sha256_file(p) for p in result.extracted_paths} == served
    by_status = {
        labels["status"]: value
        for labels, value in metrics["http_requests_total"]
        if labels["handler"] == "/jobs/{job_uuid}/outputs/archive"
    }
    # TaskProcessingStarted, then at least one "already running", then the zip.
    assert by_status["425"] >= 2
    assert by_status["200"] == 1


async def test_unknown_id_waits_to_the_deadline_and_says_the_id_may_be_wrong(
    sim: Simulator,
) -> None:
    async with client_for(sim) as client:
        with pytest.raises(PollTimeout) as info:
            await client.wait(str(uuid.uuid4()), timeout=0.2)
    assert info.value.state is not None
    assert info.value.state.native_status == "PENDING"
    assert "the job id may be wrong" in str(info.value)


async def test_wrong_key_is_401_without_the_key(sim: Simulator, model: Path) -> None:
    provider = Pixyz(api_key="not-the-key-123", base_url=sim.urls["pixyz"])
    async with PixyzClient(provider, retry=FAST_RETRY) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.submit(thumbs(model))
        with pytest.raises(AuthenticationError):
            await client.jobs()
        assert await client.processes()  # no key needed
    assert info.value.status_code == 401
    assert "Invalid token" in str(info.value)
    assert "not-the-key-123" not in str(info.value)
    assert "not-the-key-123" not in repr(info.value)


async def test_400_details_reach_the_caller(sim: Simulator, tmp_path: Path) -> None:
    async with client_for(sim) as client:
        with pytest.raises(InvalidRequest, match="Bad Request: Invalid process 'nope'"):
            await client.submit({"process": "nope"})

        with pytest.raises(InvalidRequest, match="Invalid process 'nope'"):
            await client.process_doc("nope")
        url = f"{sim.urls['pixyz']}/jobs"
        headers = {"x-api-key": sim.api_key}
        bad_json = Request("POST", url, "submit", headers=headers, form=(
            FormPart("process", value="api_test"), FormPart("params", value="{bad"),
        ))  # fmt: skip
        with pytest.raises(InvalidRequest, match="Invalid JSON in params") as info:
            await client.send(bad_json)
        no_script = Request("POST", url, "submit", headers=headers, form=(
            FormPart("process", value="custom"),
        ))  # fmt: skip
        with pytest.raises(InvalidRequest, match="a script is required"):
            await client.send(no_script)
        with pytest.raises(ConfigurationError, match="script: required"):
            await client.submit({"process": "custom"})  # refused before sending
    assert info.value.status_code == 400


async def test_multipart_upload_reports_every_byte(sim: Simulator, tmp_path: Path) -> None:
    big = tmp_path / "big.step"
    big.write_bytes(bytes(range(256)) * 12_000)  # ~3 MiB: several reads
    counted: list[int] = []
    lock = threading.Lock()

    def on_upload(count: int) -> None:
        with lock:
            counted.append(count)

    async with client_for(sim) as client:
        job = await client.submit(
            {"process": "generate_metadata", "file": str(big)}, on_upload=on_upload
        )
        await client.wait(job.job_id)
        details = await client.details(job.job_id)
    assert sum(counted) == big.stat().st_size
    assert len(counted) > 1
    # The server's counters derive from the size it received: every byte arrived.
    assert details.raw["result"]["metadata"] == metadata_counters("big.step", big.stat().st_size)


async def test_every_provider_operation(sim: Simulator, model: Path, tmp_path: Path) -> None:
    slow = Scenario(time_scale=1e-6, queue_delay=10.0, render_time=100.0, archive_delay=5.0)
    async with Simulator(slow) as frozen, client_for(frozen) as client:
        assert await client.welcome() == "Welcome to PiXYZ API v1.0.7!"
        assert "generate_thumbnails" in await client.processes()
        assert "width" in await client.process_doc("generate_thumbnails")
        job = (await client.submit(thumbs(model, name="bracket"))).job_id
        assert (await client.get(job)).status is Status.QUEUED
        frozen.clock.advance(60)
        running = await client.details(job)
        assert (running.status, running.raw["name"]) == (Status.RENDERING, "bracket")
        assert running.progress is not None
        assert 0 < running.progress < 1
        assert running.raw["steps"][-1]["duration"] == -1
        assert [j["uuid"] for j in await client.jobs()] == [job]
        assert await client.outputs(job) == []
        frozen.clock.advance(100)
        done = await client.get(job)
        assert done.status is Status.COMPLETE
        assert [o.name for o in done.outputs][:1] == ["iso.png"]  # listed by the engine
        assert (await client.task_meta(job))["status"] == "SUCCESS"
        saved = await client.download_file(job, "x.png", tmp_path / "one")
        assert saved.path == tmp_path / "one" / "x.png"
        assert assert_valid_png(saved.path.read_bytes()) == (9, 5)
        await client.callback({"job": job})
        requests = await client.metrics()
    assert ({"status": "SUCCESS"}, 1.0) in requests["pixyz_jobs"]
    served = {labels["kind"]: value for labels, value in requests["http_response_bytes_total"]}
    assert served["file"] == saved.size


async def test_process_docs_through_the_client_are_upstreams(sim: Simulator) -> None:
    async with client_for(sim) as client:
        api_test = await client.process_doc("api_test")
        sleep = await client.process_doc("sleep")
        with pytest.raises(ServerError) as caught:
            await client.process_doc("__init__")
    assert api_test == (
        "Process 'api_test' documentation:\n\n"
        "Test the PixyzScheduler API by returning a simple string"
    )
    assert sleep == "Process 'sleep' documentation:\n\nNone"  # upstream has no docstring
    assert caught.value.status_code == 500
    assert "HTTPException: 404: {'code': 404, 'message': 'Not Found'" in str(caught.value)


async def test_hostile_output_names_never_leave_the_download_directory(
    sim: Simulator, tmp_path: Path
) -> None:
    out = tmp_path / "a" / "b"
    spec = {"script": script(tmp_path, "outputs=../evil,ok.txt"), "params": {}}
    by_name = DownloadPolicy(name_template="{name}{ext}", not_ready=NOT_READY)
    async with client_for(sim, download=by_name) as client:
        job = (await client.submit(spec)).job_id
        with pytest.raises(UnsafePath, match=re.escape("unsafe file name '../evil'")):
            await client.check_result(job, download_directory=out)
    async with client_for(sim) as client:  # the default template names files by job and index
        result = await client.check_result(job, download_directory=out)
    assert [p.parent for p in result.downloaded_paths] == [out, out]
    extract = DownloadPolicy(extract_archives=True, not_ready=NOT_READY)
    async with client_for(sim, outputs="archive", download=extract) as client:
        with pytest.raises(UnsafePath, match=re.escape("'../evil' leaves the target directory")):
            await client.check_result(job, download_directory=out / "zip")
    assert not (out / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert sorted(p.name for p in (out / "zip").iterdir()) == [f"{job}-0.zip"]


async def test_batch_of_30_polls_through_the_job_list(sim: Simulator, tmp_path: Path) -> None:
    specs = [{"process": "api_test", "params": {"i": i}} for i in range(30)]
    async with client_for(sim) as client:
        results = [r async for r in client.run(specs, download_directory=tmp_path, journal=False)]
    assert len(results) == 30
    assert all(r.status is Status.COMPLETE for r in results)
    routes = sim.stats()["requests"]["by_route"]
    listed = routes.get("GET /pixyz/jobs", 0)
    single = routes.get("GET /pixyz/jobs/{job_uuid}", 0)
    polls = sum(r.polls for r in results)
    assert listed >= 1
    assert listed + single < polls  # many jobs refreshed per request
    assert listed + single < 30


def test_blocking_client_against_the_threaded_simulator(model: Path, tmp_path: Path) -> None:
    with ThreadedSimulator(QUICK) as sim:
        provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"])
        with Client(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
            job = client.submit(
                {"process": "convert_file", "file": str(model), "params": {"extension": "glb"}}
            )
            result = client.check_result(job.job_id, download_directory=tmp_path)
    assert result.ok
    (path,) = result.downloaded_paths
    assert path.read_bytes()[:4] == b"glTF"
