"""Shared request bodies and small request helpers for the simulator's tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pollkit.sim import Scenario

# A clock that barely moves on its own: tests step it with `sim.clock.advance`, so every
# status they observe is decided by the test, not by how fast the machine is.
MANUAL = Scenario(seed=7, time_scale=1.0, queue_delay=100.0, render_time=100.0)

# A flux0 id: 10 characters of nanoid's alphabet, never "_", and "-" only inside.
FLUX0_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{8}[A-Za-z0-9]$")

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


@dataclass(frozen=True)
class RawReply:
    """What a bare socket saw: the status line and headers, the body bytes, how it ended."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    reset: bool  # the connection was reset rather than closed


async def raw_get(url: str, headers: dict[str, str] | None = None) -> RawReply:
    """GET over a plain socket and read until the server closes or resets the connection.

    aiohttp's client turns a short body into an exception and hides what arrived; this shows
    exactly how many bytes came and whether the connection ended with FIN or RST.
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = bytearray()
    reset = False
    try:
        while chunk := await reader.read(1 << 16):
            data += chunk
    except ConnectionResetError:
        reset = True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    if not head:
        return RawReply(status=0, headers={}, body=b"", reset=reset)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return RawReply(status=int(status_line.split()[1]), headers=parsed, body=body, reset=reset)
