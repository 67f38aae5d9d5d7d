"""Output files: deterministic PNG images and MP4-looking videos, and serving them over HTTP.

Files are generated from ``(seed, job id, index)`` alone, so the same scenario always produces
the same bytes. Digests are kept for every file; the bytes themselves sit in a bounded cache
and are regenerated if they were evicted (a benchmark with thousands of videos must not hold
gigabytes in memory). Range parsing lives in `pollkit.sim.transfer._serve` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import random
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from pollkit.sim.transfer._serve import (
    Delivery,
    RangeNotSatisfiable,
    bytes_entity,
    parse_range,
    serve,
)

__all__ = [
    "CHUNK_SIZE",
    "FileInfo",
    "FileStore",
    "Maker",
    "RangeNotSatisfiable",
    "make_png",
    "make_video",
    "parse_range",
    "stream_file",
]

#: Bytes per write when streaming an output file.
CHUNK_SIZE = 256 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def make_png(width: int, height: int, key: bytes) -> bytes:
    """A valid 8-bit RGB PNG with a diagonal pattern whose colours derive from `key`.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        key: Bytes that pick the pattern; different keys give different images.

    Returns:
        The complete PNG file.
    """
    d = hashlib.sha256(key).digest()
    ka, kb, kc = d[0] | 1, d[1] | 1, d[2] | 1
    line = bytearray()
    for x in range(width):
        line += bytes(((x * ka + d[3]) & 255, (x * kb + d[4]) & 255, ((x // 8) * kc + d[5]) & 255))
    period = len(line)
    doubled = bytes(line) * 2
    # Each row is the first row rotated by a key-dependent number of pixels: a diagonal
    # pattern that costs one slice per row instead of a Python loop per pixel.
    step = (d[6] % width + 1) * 3
    rows = []
    for y in range(height):
        start = (y * step) % period
        rows.append(b"\x00" + doubled[start : start + period])  # filter type 0 (None)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(rows), 6)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def make_video(size: int, key: bytes) -> bytes:
    """Deterministic bytes shaped like an MP4: an ``ftyp`` box, then one ``mdat`` box.

    Args:
        size: Total length in bytes (at least 36).
        key: Bytes that pick the payload.

    Returns:
        Exactly `size` bytes.

    Raises:
        ValueError: `size` is too small for the two box headers.
    """
    ftyp = struct.pack(">I4s4sI", 28, b"ftyp", b"isom", 0x200) + b"isomiso2mp41"
    mdat_size = size - len(ftyp)
    if mdat_size < 8:
        raise ValueError("a video needs at least 36 bytes")
    payload = random.Random(key).randbytes(mdat_size - 8)
    return ftyp + struct.pack(">I4s", mdat_size, b"mdat") + payload


#: Makes a file's content from its key; the same key must always give the same bytes.
Maker = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What is known about one output file without holding its bytes.

    Attributes:
        name: File name in the download URL.
        size: Length in bytes.
        sha256: Hex digest of the content.
        media_type: MIME type.
    """

    name: str
    size: int
    sha256: str
    media_type: str

    @property
    def etag(self) -> str:
        """Strong, quoted entity tag derived from the digest."""
        return f'"{self.sha256}"'


class FileStore:
    """Generates each output once, remembers its digest, and caches bytes up to a budget.

    Args:
        seed: Scenario seed, part of every file's key.
        image_size: PNG width and height.
        video_bytes: Length of each video.
        cache_bytes: Most bytes kept in memory; older files are regenerated on demand.
    """

    def __init__(
        self,
        *,
        seed: int,
        image_size: tuple[int, int],
        video_bytes: int,
        cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._seed = seed
        self._image_size = image_size
        self._video_bytes = video_bytes
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._info: dict[tuple[str, int], FileInfo] = {}
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cached = 0

    def _generate(self, job_id: str, index: int, media_type: str, make: Maker | None) -> bytes:
        key = f"{self._seed}:{job_id}:{index}".encode()
        if make is not None:
            return make(key)
        if media_type == "image/png":
            return make_png(*self._image_size, key)
        return make_video(self._video_bytes, key)

    def get(
        self, job_id: str, index: int, name: str, media_type: str, make: Maker | None = None
    ) -> tuple[FileInfo, bytes]:
        """The file's description and bytes, generating them on first use.

        Args:
            job_id: The job the file belongs to.
            index: Position among the job's outputs.
            name: File name to record.
            media_type: ``image/png`` or ``video/mp4`` when `make` is None.
            make: Makes the content from the file's key (bytes unique to the seed, job and
                index); it must give the same bytes every time (files are regenerated after
                leaving the cache).
        """
        slot = (job_id, index)
        with self._lock:
            data = self._cache.get(slot)
            if data is not None:
                self._cache.move_to_end(slot)
                return self._info[slot], data
        # Generate outside the lock: a big PNG takes milliseconds and other requests can go on.
        data = self._generate(job_id, index, media_type, make)
        with self._lock:
            info = self._info.get(slot)
            if info is None:
                digest = hashlib.sha256(data).hexdigest()
                info = FileInfo(name=name, size=len(data), sha256=digest, media_type=media_type)
                self._info[slot] = info
            if slot not in self._cache:
                self._cache[slot] = data
                self._cached += len(data)
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        return info, data

    def info(
        self, job_id: str, index: int, name: str, media_type: str, make: Maker | None = None
    ) -> FileInfo:
        """The file's description, generating the file if it was never generated."""
        with self._lock:
            known = self._info.get((job_id, index))
        if known is not None:
            return known
        return self.get(job_id, index, name, media_type, make)[0]


async def stream_file(
    request: web.Request,
    info: FileInfo,
    data: bytes,
    *,
    modified_at: float,
    on_bytes: Callable[[int], None],
    chunk_size: int = CHUNK_SIZE,
) -> web.StreamResponse:
    """Answer a GET or HEAD for a file, honouring ``Range`` and ``If-Range``, without faults.

    Args:
        request: The incoming request.
        info: The file's description (size, ETag, media type).
        data: The file's bytes.
        modified_at: Unix time for ``Last-Modified``.
        on_bytes: Called with the length of each body chunk written.
        chunk_size: Bytes per write.

    Returns:
        The finished response (200, 206 or 416).
    """
    entity = bytes_entity(
        data,
        etag=info.etag,
        media_type=info.media_type,
        modified_at=modified_at,
        chunk_size=chunk_size,
    )
    return await serve(request, entity, Delivery(on_bytes=on_bytes, chunk_size=chunk_size))
