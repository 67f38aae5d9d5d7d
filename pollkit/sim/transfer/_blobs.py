"""Blobs: deterministic files of any size, generated chunk by chunk, never held whole.

A blob is defined by ``(size, seed)``. Its bytes are one pseudo-random base block of up to
1 MiB, repeated, with block ``i`` told apart by XOR-ing ``i`` into its first 8 bytes. Making
a block costs one 1 MiB copy, so a 1 GB blob is cheap to serve, and any byte range can be
produced without generating what comes before it.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

__all__ = ["BLOCK_SIZE", "blob_chunks", "blob_etag", "blob_sha256"]

#: Length of a blob block, and of the chunks `blob_chunks` yields.
BLOCK_SIZE = 1024 * 1024

_STAMP = 8


@functools.lru_cache(maxsize=16)
def _base_block(size: int, seed: int) -> tuple[bytes, int]:
    # The base block depends on the size too, so blobs of different sizes differ byte for
    # byte (a resume against the wrong size must not look right). A small cache: benchmarks
    # fetch many blobs of few sizes, and each entry is at most 1 MiB.
    base = random.Random(f"pollkit-blob:{seed}:{size}").randbytes(min(size, BLOCK_SIZE))
    head = int.from_bytes(base[:_STAMP], "little")
    return base, head


def _block(base: bytes, head: int, index: int) -> bytes:
    if index == 0:
        return base
    stamp = (head ^ index).to_bytes(_STAMP, "little")
    return b"".join((stamp, memoryview(base)[_STAMP:]))


def blob_chunks(size: int, seed: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of the blob ``(size, seed)``, in chunks of at most 1 MiB.

    Chunks follow block boundaries: all but the first and last are exactly `BLOCK_SIZE`.

    Args:
        size: Length of the whole blob in bytes.
        seed: Picks the content.
        start: First byte to produce.
        end: One past the last byte to produce; None means `size`.

    Returns:
        An iterator of chunks whose concatenation is the requested range.

    Raises:
        ValueError: `size` is negative or the range does not fit in ``[0, size]``.
    """
    stop = size if end is None else end
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if not 0 <= start <= stop <= size:
        raise ValueError(f"need 0 <= start <= end <= size, got {start}, {stop}, {size}")
    return _chunks(size, seed, start, stop)


def _chunks(size: int, seed: int, start: int, stop: int) -> Iterator[bytes]:
    if start == stop:
        return
    base, head = _base_block(size, seed)
    position = start
    while position < stop:
        index, offset = divmod(position, BLOCK_SIZE)
        block = _block(base, head, index)
        block_end = min(len(block), stop - index * BLOCK_SIZE)
        yield block if offset == 0 and block_end == len(block) else block[offset:block_end]
        position = index * BLOCK_SIZE + block_end


@functools.lru_cache(maxsize=256)
def blob_sha256(size: int, seed: int) -> str:
    """Hex SHA-256 of the whole blob ``(size, seed)``, computed once per process.

    Args:
        size: Length of the blob.
        seed: Its seed.

    Returns:
        The digest a client should find after downloading it.

    Raises:
        ValueError: `size` is negative.
    """
    digest = hashlib.sha256()
    for chunk in blob_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()


def blob_etag(size: int, seed: int) -> str:
    """The blob's strong, quoted ETag, derived from ``(size, seed)`` without reading it.

    Args:
        size: Length of the blob.
        seed: Its seed.
    """
    token = hashlib.sha256(f"pollkit-blob:{seed}:{size}".encode()).hexdigest()[:32]
    return f'"{token}"'
