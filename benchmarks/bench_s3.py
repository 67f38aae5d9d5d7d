"""Outputs to S3: pollkit's delivery to an ``s3://`` URL vs s3fs ``put_file`` of the same files.

    .venv/bin/python -m benchmarks.bench_s3 [--runs 3] [--sets 4mib,120mib] [--concurrency 8]

moto's S3 server and the simulator each run in a process of their own on 127.0.0.1. For each
set, the same files (the simulator's deterministic blobs) are delivered, by turns, run by run:

- **pollkit**: ``AsyncClient.download(output, "s3://bucket/<run>/")`` for every file at once
  (the download policy's concurrency), i.e. download from the simulator into the local spool,
  verify, then a create-only put through s3fs. The clock runs from the first request to the
  last object in the bucket: the download is included.
- **s3fs put_file**: the same files, already on local disk, each put with
  ``S3FileSystem.put_file`` from as many threads as pollkit's concurrency.

Throughput is the set's bytes over the wall time (MiB/s), median of the runs (min–max); every
object is checked by sha256 against the blob after each run, and the bucket is checked for open
multipart uploads. Target: pollkit ≥ 0.8× put_file.

Two more rows say where the time goes: pollkit's put stage alone (the spooled, verified files
put create-only, from the same number of threads) and the download half alone (the same files
from the simulator into a local folder).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.simprocess import SimProcess, free_port
from pollkit import AsyncClient, DownloadPolicy, MagicHour
from pollkit.download._destination import Destination, _Put
from pollkit.models import Output
from pollkit.sim.transfer._blobs import blob_chunks, blob_sha256

MIB = 1 << 20
SETS = {"4mib": (48, 4 * MIB), "120mib": (2, 120 * MIB)}


class MotoProcess:
    """moto's S3 server in a process of its own."""

    def __enter__(self) -> MotoProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url, timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def __exit__(self, *exc: object) -> None:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(timeout=10)


def options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "bench",
        "secret": "bench",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


async def pollkit_run(
    sim: SimProcess,
    endpoint: str,
    bucket: str,
    prefix: str,
    files: list[tuple[str, int]],
    spool: Path,
    concurrency: int,
) -> float:
    policy = DownloadPolicy(
        spool_directory=spool, storage_options=options(endpoint), concurrency=concurrency
    )
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    async with AsyncClient(provider, download=policy) as client:
        outputs = [
            Output(url=f"{sim.url}/_sim/blobs/{name}?size={size}&seed={i}", index=i)
            for i, (name, size) in enumerate(files)
        ]
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client.download(o, f"s3://{bucket}/{prefix}/", name=n)
                for o, (n, _) in zip(outputs, files, strict=True)
            )
        )
        return time.perf_counter() - started


def put_stage_run(
    endpoint: str,
    bucket: str,
    prefix: str,
    local: Path,
    files: list[tuple[str, int]],
    concurrency: int,
) -> float:
    """pollkit's put of already spooled, verified files alone (its create-only put and the
    existing-object policy), from as many threads as the peer."""
    policy = DownloadPolicy(storage_options=options(endpoint))
    destination = Destination(f"s3://{bucket}/{prefix}", policy)
    sizes = {name: (size, blob_sha256(size, i)) for i, (name, size) in enumerate(files)}

    def put(name: str) -> None:
        size, sha256 = sizes[name]
        _Put(destination, local / name, size, sha256, lambda _: None, None).run(name, "rename")

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(put, sizes))
    return time.perf_counter() - started


async def download_run(
    sim: SimProcess, files: list[tuple[str, int]], directory: Path, concurrency: int
) -> float:
    """The download half alone: the same files into a local folder."""
    provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
    async with AsyncClient(provider, download=DownloadPolicy(concurrency=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                client.download(
                    Output(url=f"{sim.url}/_sim/blobs/{name}?size={size}&seed={i}", index=i),
                    directory,
                    name=name,
                )
                for i, (name, size) in enumerate(files)
            )
        )
        return time.perf_counter() - started


def put_file_run(
    fs: Any, bucket: str, prefix: str, local: Path, files: list[tuple[str, int]], concurrency: int
) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda f: fs.put_file(str(local / f[0]), f"{bucket}/{prefix}/{f[0]}"), files))
    return time.perf_counter() - started


def check(fs: Any, bucket: str, prefix: str, files: list[tuple[str, int]]) -> None:
    for i, (name, size) in enumerate(files):
        digest = hashlib.sha256(fs.cat_file(f"{bucket}/{prefix}/{name}")).hexdigest()
        assert digest == blob_sha256(size, i), f"{prefix}/{name} differs"
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert uploads == [], f"{len(uploads)} open multipart uploads"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sets", default="4mib,120mib")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    import s3fs

    work = Path(tempfile.mkdtemp(prefix="pollkit-bench-s3-"))
    rows = []
    try:
        with MotoProcess() as moto, SimProcess("fast") as sim:
            fs = s3fs.S3FileSystem(**options(moto.url))
            for label in args.sets.split(","):
                count, size = SETS[label]
                files = [(f"f{i:03d}.bin", size) for i in range(count)]
                local = work / label
                local.mkdir()
                for i, (name, n) in enumerate(files):  # the same bytes, on disk for put_file
                    with open(local / name, "wb") as handle:
                        for chunk in blob_chunks(n, i):
                            handle.write(chunk)
                times: dict[str, list[float]] = {
                    "pollkit (download + put)": [],
                    "pollkit put stage alone": [],
                    "pollkit download alone (local disk)": [],
                    "s3fs put_file": [],
                }
                for run in range(args.runs):
                    bucket = f"bench-{label}-{run}"
                    fs.call_s3("create_bucket", Bucket=bucket)
                    spool = work / f"spool-{label}-{run}"
                    times["pollkit (download + put)"].append(
                        asyncio.run(
                            pollkit_run(
                                sim, moto.url, bucket, "pollkit", files, spool, args.concurrency
                            )
                        )
                    )
                    check(fs, bucket, "pollkit", files)
                    times["s3fs put_file"].append(
                        put_file_run(fs, bucket, "put", local, files, args.concurrency)
                    )
                    check(fs, bucket, "put", files)
                    times["pollkit put stage alone"].append(
                        put_stage_run(moto.url, bucket, "stage", local, files, args.concurrency)
                    )
                    check(fs, bucket, "stage", files)
                    plain = work / f"plain-{label}-{run}"
                    times["pollkit download alone (local disk)"].append(
                        asyncio.run(download_run(sim, files, plain, args.concurrency))
                    )
                    shutil.rmtree(plain)
                    fs.rm(bucket, recursive=True)
                    shutil.rmtree(spool, ignore_errors=True)
                total = count * size / MIB
                peer = statistics.median(total / t for t in times["s3fs put_file"])
                for tool, measured in times.items():
                    rates = sorted(total / t for t in measured)
                    median = statistics.median(rates)
                    rows.append(
                        f"| {count} × {size // MIB} MiB | {tool} | {median:.0f}"
                        f" ({rates[0]:.0f}–{rates[-1]:.0f}) | {median / peer:.2f} |"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    print(f"{machine}, {args.runs} runs, concurrency {args.concurrency}")
    print("| set | tool | MiB/s, median (min–max) | × put_file |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
