"""Hostile zip archives, for testing what a client does when it extracts a download.

Each kind is a real zip built with `zipfile`, byte for byte the same on every run (fixed
timestamps, Unix attributes, fixed contents), built on first use and cached for the process:

- ``safe``: three ordinary files, two of them in sub-directories.
- ``traversal``: a safe file, then ``../evil.txt``.
- ``absolute``: ``/tmp/pollkit-evil.txt``.
- ``symlink``: a symbolic link to ``../../outside``, then a safe file.
- ``bomb``: one entry of 64 MiB of zeros that deflates to about 64 KiB.
- ``ratio``: 200 entries of 1 MiB of zeros each (200 MiB from under 1 MiB).
- ``lying``: a safe file, then an entry whose headers claim 10 bytes but whose data inflates
  to 8 MiB (its CRC is that of the 8 MiB): only counting the bytes actually produced catches it.
"""

from __future__ import annotations

import hashlib
import io
import random
import stat
import struct
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from pollkit.sim.transfer._files import make_png

__all__ = [
    "ARCHIVE_KINDS",
    "LYING_CLAIMED_SIZE",
    "ArchiveInfo",
    "archive_info",
    "build_archive",
    "built_archives",
]

#: Every kind `build_archive` knows, in a stable order.
ARCHIVE_KINDS: tuple[str, ...] = (
    "safe",
    "traversal",
    "absolute",
    "symlink",
    "bomb",
    "ratio",
    "lying",
)

#: The uncompressed size the ``lying`` entry's headers claim.
LYING_CLAIMED_SIZE = 10

_MIB = 1024 * 1024
_DATE = (2024, 1, 1, 0, 0, 0)  # zip timestamps have no zone; any fixed value keeps bytes stable
_UNIX = 3  # ZipInfo.create_system for Unix, so that mode bits (and S_IFLNK) mean something
_ZEROS = bytes(_MIB)
_SAFE_TEXT = b"pollkit.sim: an ordinary file.\n"


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """What a client can check after downloading an archive.

    Attributes:
        kind: Which archive.
        size: Length of the zip file in bytes.
        sha256: Hex digest of the zip file.
        entries: Entry names, in the order they are stored.
    """

    kind: str
    size: int
    sha256: str
    entries: tuple[str, ...]

    @property
    def etag(self) -> str:
        """Strong, quoted entity tag derived from the digest."""
        return f'"{self.sha256}"'


def _entry(
    name: str, *, mode: int = stat.S_IFREG | 0o644, compress: int = zipfile.ZIP_DEFLATED
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.create_system = _UNIX
    info.external_attr = mode << 16
    info.compress_type = compress
    return info


def _safe(archive: zipfile.ZipFile) -> None:
    archive.writestr(_entry("a.txt"), _SAFE_TEXT)
    archive.writestr(_entry("dir/b.bin"), random.Random("pollkit-archive").randbytes(4096))
    archive.writestr(_entry("images/c.png"), make_png(32, 32, b"pollkit-archive"))


def _traversal(archive: zipfile.ZipFile) -> None:
    archive.writestr(_entry("safe.txt"), _SAFE_TEXT)
    archive.writestr(_entry("../evil.txt"), b"written outside the target directory\n")


def _absolute(archive: zipfile.ZipFile) -> None:
    archive.writestr(_entry("/tmp/pollkit-evil.txt"), b"written to an absolute path\n")


def _symlink(archive: zipfile.ZipFile) -> None:
    # Stored uncompressed, as zip tools store links: the data is the link target.
    link = _entry("link", mode=stat.S_IFLNK | 0o777, compress=zipfile.ZIP_STORED)
    archive.writestr(link, b"../../outside")
    archive.writestr(_entry("safe.txt"), _SAFE_TEXT)


def _bomb(archive: zipfile.ZipFile) -> None:
    # Written a mebibyte at a time, so building it never holds 64 MiB.
    with archive.open(_entry("bomb.bin"), "w") as entry:
        for _ in range(64):
            entry.write(_ZEROS)


def _ratio(archive: zipfile.ZipFile) -> None:
    # Level 1 compresses zeros twice as fast as the default and still shrinks each entry
    # about 230 times; the point is the total, 200 MiB, not the best ratio.
    for index in range(200):
        archive.writestr(_entry(f"zeros/{index:03d}.bin"), _ZEROS, compresslevel=1)


def _lying(archive: zipfile.ZipFile) -> None:
    archive.writestr(_entry("a.txt"), _SAFE_TEXT)
    with archive.open(_entry("lying.bin"), "w") as entry:
        for _ in range(8):
            entry.write(_ZEROS)


def _claim_size(data: bytearray, name: str, claimed: int) -> None:
    # Rewrites the uncompressed size of `name` in its central directory record and in its
    # local header; the compressed size and the CRC keep their true values.
    end = data.rindex(b"PK\x05\x06")
    (position,) = struct.unpack_from("<I", data, end + 16)
    while data[position : position + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
        if data[position + 46 : position + 46 + name_len] == name.encode():
            struct.pack_into("<I", data, position + 24, claimed)
            (local,) = struct.unpack_from("<I", data, position + 42)
            struct.pack_into("<I", data, local + 22, claimed)
            return
        position += 46 + name_len + extra_len + comment_len
    raise LookupError(name)  # pragma: no cover - the entry is always written above


_BUILDERS: dict[str, Callable[[zipfile.ZipFile], None]] = {
    "safe": _safe,
    "traversal": _traversal,
    "absolute": _absolute,
    "symlink": _symlink,
    "bomb": _bomb,
    "ratio": _ratio,
    "lying": _lying,
}


_lock = threading.Lock()
_built: dict[str, tuple[bytes, ArchiveInfo]] = {}


def _build(kind: str) -> bytes:
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"kind must be one of {', '.join(ARCHIVE_KINDS)}, not {kind!r}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        builder(zf)
    data = bytearray(buffer.getvalue())
    if kind == "lying":
        _claim_size(data, "lying.bin", LYING_CLAIMED_SIZE)
    return bytes(data)


def _cached(kind: str) -> tuple[bytes, ArchiveInfo]:
    with _lock:
        known = _built.get(kind)
    if known is not None:
        return known
    # Built outside the lock: two threads may both build a kind once; the bytes are equal.
    data = _build(kind)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = tuple(archive.namelist())
    info = ArchiveInfo(
        kind=kind, size=len(data), sha256=hashlib.sha256(data).hexdigest(), entries=names
    )
    with _lock:
        return _built.setdefault(kind, (data, info))


def build_archive(kind: str) -> bytes:
    """The zip file of one kind, built on first use and cached for the process.

    The big kinds take a few hundred milliseconds the first time (``bomb`` deflates 64 MiB,
    ``ratio`` 200 MiB).

    Args:
        kind: One of `ARCHIVE_KINDS`.

    Returns:
        The complete zip file.

    Raises:
        ValueError: Unknown kind.
    """
    return _cached(kind)[0]


def archive_info(kind: str) -> ArchiveInfo:
    """Size, digest and entry names of one kind of archive (building it if needed).

    Args:
        kind: One of `ARCHIVE_KINDS`.

    Raises:
        ValueError: Unknown kind.
    """
    return _cached(kind)[1]


def built_archives() -> dict[str, ArchiveInfo]:
    """The archives built so far in this process, by kind, without building any.

    Returns:
        ``{kind: ArchiveInfo}`` in the order of `ARCHIVE_KINDS`.
    """
    with _lock:
        return {kind: _built[kind][1] for kind in ARCHIVE_KINDS if kind in _built}
