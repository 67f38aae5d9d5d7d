"""Helpers for end-to-end tests against the simulator."""

from __future__ import annotations

import hashlib
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pollkit import Cadence, RetryPolicy, Status
from pollkit.sim import Scenario

# A clock that barely moves: tests move it themselves with `sim.clock.advance`.
FROZEN = Scenario(time_scale=1e-6, queue_delay=10.0, render_time=10.0)
FAST_CADENCE = Cadence(initial=0.002, maximum=0.01, jitter=0.1, timeout=10)
FAST_RETRY = RetryPolicy(initial=0.001, maximum=0.01, max_attempts=5)

IMAGE_SPEC: dict[str, Any] = {
    "tool": "ai-image-generator",
    "image_count": 2,
    "style": {"prompt": "a lighthouse"},
}
VIDEO_SPEC: dict[str, Any] = {
    "tool": "text-to-video",
    "end_seconds": 5,
    "style": {"prompt": "a paper boat"},
}


class RecordingSink:
    """A progress sink that records statuses and bytes, and can react to a status."""

    def __init__(self, on_status: Callable[[Status], None] | None = None) -> None:
        self.statuses: list[Status] = []
        self.bytes = 0
        self.total = 0
        self.closed = False
        self.files: dict[str, tuple[int, int | None]] = {}
        self._on_status = on_status

    def add_jobs(self, count: int) -> None:
        pass

    def job_status(self, job_id: str, status: Status) -> None:
        self.statuses.append(status)
        if self._on_status:
            self._on_status(status)

    def add_bytes_total(self, count: int) -> None:
        self.total += count

    def advance_bytes(self, count: int) -> None:
        self.bytes += count

    def file_progress(self, name: str, done: int, total: int | None) -> None:
        self.files[name] = (done, total)

    def close(self) -> None:
        self.closed = True


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job_stats(stats: dict[str, Any], job_id: str) -> dict[str, Any]:
    (job,) = [j for j in stats["jobs"] if j["id"] == job_id]
    return job


def assert_valid_png(data: bytes) -> tuple[int, int]:
    """Walk the PNG chunks, check every CRC and decompress the image data; return its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    assert len(zlib.decompress(idat)) > 0
    return width, height


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (until something binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
