"""Shared request bodies and small request helpers for the simulator's tests."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import aiohttp

from pollkit.sim import Scenario

# A clock that barely moves on its own: tests step it with `sim.clock.advance`, so every
# status they observe is decided by the test, not by how fast the machine is.
MANUAL = Scenario(seed=7, time_scale=1.0, queue_delay=100.0, render_time=100.0)

IMAGE_BODY: dict[str, Any] = {"image_count": 2, "style": {"prompt": "a harbour at dawn"}}
VIDEO_BODY: dict[str, Any] = {"end_seconds": 5.0, "style": {"prompt": "a paper boat"}}
ANIMATION_BODY: dict[str, Any] = {
    "fps": 12,
    "end_seconds": 3.0,
    "width": 512,
    "height": 512,
    "style": {
        "art_style": "Cyberpunk",
        "camera_effect": "Simple Zoom In",
        "prompt_type": "custom",
        "prompt": "a city",
        "transition_speed": 5,
    },
    "assets": {"audio_source": "none"},
}


async def create(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> str:
    """Create a project and return its id."""
    async with http.post(path, json=body) as response:
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
    return str(reply["id"])


async def get_project(http: aiohttp.ClientSession, kind: str, job_id: str) -> dict[str, Any]:
    """GET a project (``kind`` is ``image`` or ``video``) and return its JSON."""
    async with http.get(f"/v1/{kind}-projects/{job_id}") as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        project: dict[str, Any] = await response.json()
    return project


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parse_png(data: bytes) -> tuple[int, int, bytes]:
    """Check a PNG's structure and CRCs; return width, height and the decompressed pixels."""
    assert data[:8] == PNG_SIGNATURE
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        tag = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        chunks.append((tag, body))
        position += 12 + length
    assert position == len(data)
    tags = [tag for tag, _ in chunks]
    assert tags[0] == b"IHDR"
    assert tags[-1] == b"IEND"
    assert chunks[-1][1] == b""
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    pixels = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    assert len(pixels) == height * (1 + 3 * width)
    assert all(pixels[row * (1 + 3 * width)] == 0 for row in range(height))  # filter bytes
    return width, height, pixels
