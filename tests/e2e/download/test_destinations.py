"""Outputs to fsspec URLs: a real S3 API (moto's server on loopback, through s3fs), fsspec's
memory filesystem and ``file://``, fed by the simulator over real sockets."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import fsspec

from pollkit import AsyncClient, Cadence, DownloadPolicy, MagicHour, StorageError
from pollkit.batch.journal._records import default_journal_path
from pollkit.batch.journal._sqlite import SQLiteJournal
from pollkit.cli import main
from pollkit.models import Output
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import FAST_RETRY, FROZEN, IMAGE_SPEC, RecordingSink, job_stats
from tests.s3 import SECRET

FAST = Scenario(
    time_scale=1000.0, queue_delay=(1.0, 3.0), render_time=(5.0, 20.0), image_size=(32, 32)
)
CADENCE = Cadence(initial=0.005, maximum=0.05, timeout=30)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "dummy",
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        # s3fs would cache listings across the test's own writes to the bucket.
        "skip_instance_cache": True,
        "use_listings_cache": False,
    }


def policy(tmp_path: Path, endpoint: str = "", **kwargs: Any) -> DownloadPolicy:
    options = s3_options(endpoint) if endpoint else {}
    return DownloadPolicy(spool_directory=tmp_path / "spool", storage_options=options, **kwargs)


def image(i: int) -> dict[str, Any]:
    return {"tool": "ai-image-generator", "image_count": 1 + i % 2, "style": {"prompt": f"p{i}"}}


def bucket_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FAST) as simulator:
        yield simulator


def client_for(sim: Simulator, download: DownloadPolicy) -> AsyncClient:
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    return AsyncClient(provider, cadence=CADENCE, retry=FAST_RETRY, download=download)


async def test_a_batch_to_s3_lands_byte_exact_recorded_and_a_rerun_sends_nothing(
    sim: Simulator, s3: Any, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/run/"
    download = policy(tmp_path, s3_endpoint)
    sink = RecordingSink()
    async with client_for(sim, download) as client:
        results = [
            r
            async for r in client.run(
                [image(i) for i in range(40)], download_directory=url, progress=sink
            )
        ]
        requests = sim.stats()["requests"]["total"]
        again = [r async for r in client.run([image(i) for i in range(40)], download_directory=url)]
    assert len(results) == 40
    assert all(r.ok and r.downloaded_paths == () for r in results)
    objects = bucket_objects(s3, bucket)
    expected = {}
    for result in results:
        served = [o["sha256"] for o in job_stats(sim.stats(), result.job_id)["outputs"]]
        keys = [u.removeprefix(f"s3://{bucket}/") for u in result.destinations]
        assert [sha(objects[k]) for k in keys] == served == list(result.sha256)
        expected.update(zip(result.destinations, served, strict=True))
    assert len(objects) == len(expected) == sum(1 + i % 2 for i in range(40))
    # The journal (local, in the spool) holds the final URL, size and sha256 of every object.
    spool = next((tmp_path / "spool").iterdir())
    with SQLiteJournal(default_journal_path(spool)) as journal:
        recorded = {o.path: (o.size, o.sha256) for e in journal.entries() for o in e.outputs}
    listing = {f"s3://{bucket}/{k}": (len(v), sha(v)) for k, v in objects.items()}
    assert recorded == listing
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # Spooled copies are gone once delivered; progress counted download then upload.
    assert [p.name for p in spool.iterdir()] == [".pollkit"]
    assert sink.total == sink.bytes == 2 * sum(len(v) for v in objects.values())
    # A rerun: nothing asked of the API, the same URLs.
    assert sim.stats()["requests"]["total"] == requests
    assert sorted(d for r in again for d in r.destinations) == sorted(expected)
    assert len(bucket_objects(s3, bucket)) == len(objects)


@pytest.mark.parametrize("store", ["s3", "memory"])
@pytest.mark.parametrize(
    ("existing", "delivered_as", "old_kept"),
    [("rename", "x (1).png", True), ("skip", "x.png", True), ("overwrite", "x.png", False)],
)
async def test_an_object_with_other_bytes_follows_the_existing_policy(
    store: str,
    existing: str,
    delivered_as: str,
    old_kept: bool,
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
) -> None:
    root = f"s3://{bucket}/out" if store == "s3" else f"memory://{uuid.uuid4().hex}"
    download = policy(tmp_path, s3_endpoint if store == "s3" else "", existing=existing)
    fs = fsspec.filesystem(store, **download.storage_options)
    fs.pipe_file(f"{root}/x.png", b"older bytes")
    async with Simulator(FROZEN) as sim, client_for(sim, download) as client:
        job = await client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        state = await client.get(job.job_id)
        served = job_stats(sim.stats(), job.job_id)["outputs"][0]["sha256"]
        first = await client.download(state.outputs[0], root + "/", name="x.png")
        # The same output again: whatever is there now is kept, nothing new is written.
        second = await client.download(state.outputs[0], root + "/", name="x.png")
    assert first.destination == f"{root}/{delivered_as}"
    assert (fs.cat_file(f"{root}/x.png") == b"older bytes") is old_kept
    if existing == "skip":
        assert first.reused
        assert first.sha256 == sha(b"older bytes")
    else:
        assert not first.reused
        assert first.sha256 == served == sha(fs.cat_file(f"{root}/{delivered_as}"))
    assert second.reused
    assert second.sha256 == first.sha256
    assert second.destination == (f"{root}/x.png" if existing != "rename" else first.destination)
    names = sorted(posixpath.basename(p) for p in fs.ls(root, detail=False))
    assert names == sorted({"x.png", delivered_as})


async def test_a_missing_bucket_is_a_storage_error_naming_the_url_and_the_job_stays_undelivered(
    sim: Simulator, s3: Any, s3_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"missing-{uuid.uuid4().hex[:8]}"
    url = f"s3://{name}/run"
    download = policy(tmp_path, s3_endpoint)
    async with client_for(sim, download) as client:
        (failed,) = [r async for r in client.run([image(0)], download_directory=url)]
        assert isinstance(failed.error, StorageError)
        message = str(failed.error)
        assert f"{url}/{failed.job_id}-0.png" in message
        assert SECRET not in message
        assert SECRET not in repr(download)
        spool = next((tmp_path / "spool").iterdir())
        with SQLiteJournal(default_journal_path(spool)) as journal:
            (entry,) = journal.entries()
        assert entry.state != "done"
        assert entry.outputs == ()
        # The verified bytes wait in the spool: once the bucket exists, a rerun delivers them
        # without a new submit, keeping the spooled file instead of writing it again.
        (spooled,) = [p for p in spool.iterdir() if p.suffix == ".png"]
        s3.create_bucket(Bucket=name)
        with caplog.at_level(logging.DEBUG, logger="pollkit.download"):
            (done,) = [r async for r in client.run([image(0)], download_directory=url)]
    assert done.ok
    assert done.job_id == failed.job_id
    assert len(sim.stats()["jobs"]) == 1
    assert f"{spooled} is already complete" in caplog.messages
    ((key, data),) = bucket_objects(s3, name).items()
    assert done.destinations == (f"s3://{name}/{key}",)
    assert done.sha256 == (sha(data),)
    assert not spooled.exists()


async def test_check_result_to_memory_and_to_a_file_url(tmp_path: Path) -> None:
    download = policy(tmp_path)
    async with Simulator(FROZEN) as sim, client_for(sim, download) as client:
        job = await client.submit(IMAGE_SPEC)
        sim.clock.advance(100)
        to_memory = await client.check_result(job.job_id, download_directory="memory://x")
        to_file = await client.check_result(job.job_id, download_directory=tmp_path.as_uri())
        served = [o["sha256"] for o in job_stats(sim.stats(), job.job_id)["outputs"]]
    memory = fsspec.filesystem("memory")
    assert list(to_memory.destinations) == [
        f"memory://x/{job.job_id}-{i}.png" for i in range(len(served))
    ]
    assert [sha(memory.cat_file(url)) for url in to_memory.destinations] == served
    assert to_memory.downloaded_paths == ()
    # file:// is the local folder itself, as a plain path would be.
    assert to_file.destinations == ()
    assert {p.parent for p in to_file.downloaded_paths} == {tmp_path}
    assert list(to_file.sha256) == served


async def test_a_failed_multipart_upload_is_aborted(
    s3: Any, s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """s3fs sends 100 MiB and more in parts; a create-only completion refused by an object
    already there leaves no open upload, and the file is put under the next free name."""
    size = 100 * 2**20 + 1
    s3.put_object(Bucket=bucket, Key="big.bin", Body=b"someone else's")
    download = policy(tmp_path, s3_endpoint)
    async with Simulator(FROZEN) as sim, client_for(sim, download) as client:
        output = Output(url=f"{sim.url}/_sim/blobs/big.bin?size={size}&seed=7", index=0)
        saved = await client.download(output, f"s3://{bucket}", name="big.bin")
    assert saved.destination == f"s3://{bucket}/big (1).bin"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    head = s3.head_object(Bucket=bucket, Key="big (1).bin")
    assert head["ContentLength"] == size == saved.size
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"someone else's"


def test_pollkit_run_to_s3_with_the_stores_own_configuration(
    s3: Any,
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI has no storage flags: s3fs (botocore) reads the AWS_* variables itself."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("".join(json.dumps({"spec": image(i)}) + "\n" for i in range(6)))
    url = f"s3://{bucket}/cli/"
    with ThreadedSimulator(FAST) as sim:
        argv = ["run", str(batch), "--base-url", sim.url, "--api-key", sim.api_key]
        assert main([*argv, "--download-dir", url, "--no-progress"]) == 0
        served = {o["sha256"] for j in sim.stats()["jobs"] for o in j["outputs"]}
    out = capsys.readouterr().out
    assert f"6 of 6 jobs finished: 6 complete; {len(served)} files" in out
    assert SECRET not in out
    assert {sha(v) for v in bucket_objects(s3, bucket).values()} == served
    # The default journal is in the spool under $XDG_CACHE_HOME, not in the bucket.
    (journal,) = (tmp_path / "cache" / "pollkit" / "spool").glob("*/.pollkit/journal.sqlite")
    assert all(k.startswith("cli/") for k in bucket_objects(s3, bucket))
    assert journal.stat().st_size > 0


def test_local_downloads_never_import_fsspec(tmp_path: Path) -> None:
    probe = f"""
import sys
from pollkit import Client, MagicHour
from pollkit.sim import ThreadedSimulator
with ThreadedSimulator("fast") as sim:
    with Client(MagicHour(api_key=sim.api_key, base_url=sim.url)) as client:
        job = client.submit({IMAGE_SPEC!r})
        result = client.check_result(job.job_id, download_directory={str(tmp_path)!r})
print(len(result.downloaded_paths), "fsspec" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(IMAGE_SPEC["image_count"]), "False"]
