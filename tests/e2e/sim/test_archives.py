"""Hostile archives: each kind is a real zip with exactly the trap it promises."""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import zipfile
import zlib

import aiohttp
import pytest

from pollkit.sim import Simulator
from pollkit.sim.transfer._archives import (
    ARCHIVE_KINDS,
    LYING_CLAIMED_SIZE,
    _build,
    archive_info,
    build_archive,
    built_archives,
)
from tests.e2e.sim.helpers import parse_png

MIB = 1024 * 1024


def _open(kind: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(build_archive(kind)))


def _raw_data(data: bytes, info: zipfile.ZipInfo) -> bytes:
    # The entry's compressed bytes, found through its local header (whose extra field may
    # differ in length from the central directory's).
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    return data[start : start + info.compress_size]


def test_safe() -> None:
    with _open("safe") as archive:
        assert archive.namelist() == ["a.txt", "dir/b.bin", "images/c.png"]
        assert archive.testzip() is None
        assert parse_png(archive.read("images/c.png"))[:2] == (32, 32)
        assert len(archive.read("dir/b.bin")) == 4096
        for info in archive.infolist():
            assert stat.S_ISREG(info.external_attr >> 16)


def test_traversal() -> None:
    with _open("traversal") as archive:
        assert archive.namelist() == ["safe.txt", "../evil.txt"]
        assert archive.read("../evil.txt").startswith(b"written outside")


def test_absolute() -> None:
    with _open("absolute") as archive:
        assert archive.namelist() == ["/tmp/pollkit-evil.txt"]


def test_symlink() -> None:
    with _open("symlink") as archive:
        link, safe = archive.infolist()
        assert stat.S_ISLNK(link.external_attr >> 16)
        assert link.create_system == 3
        assert archive.read(link) == b"../../outside"
        assert safe.filename == "safe.txt"
        assert stat.S_ISREG(safe.external_attr >> 16)


def test_bomb() -> None:
    data = build_archive("bomb")
    assert len(data) < 100 * 1024
    with _open("bomb") as archive:
        (entry,) = archive.infolist()
        assert entry.file_size == 64 * MIB
        assert entry.compress_type == zipfile.ZIP_DEFLATED
        with archive.open(entry) as stream:
            assert stream.read(MIB) == bytes(MIB)


def test_ratio() -> None:
    data = build_archive("ratio")
    with _open("ratio") as archive:
        entries = archive.infolist()
    assert len(entries) == 200
    assert all(entry.file_size == MIB for entry in entries)
    assert sum(entry.file_size for entry in entries) > 100 * len(data)


def test_lying() -> None:
    data = build_archive("lying")
    with _open("lying") as archive:
        assert archive.namelist() == ["a.txt", "lying.bin"]
        entry = archive.getinfo("lying.bin")
        assert entry.file_size == LYING_CLAIMED_SIZE == 10
        produced = zlib.decompressobj(-zlib.MAX_WBITS).decompress(_raw_data(data, entry))
        assert len(produced) == 8 * MIB
        assert zlib.crc32(produced) == entry.CRC  # the CRC tells the truth, the size does not
        with pytest.raises(zipfile.BadZipFile):
            archive.read(entry)  # zipfile stops at the claimed size, then the CRC fails
    (local_size,) = struct.unpack_from("<I", data, entry.header_offset + 22)
    assert local_size == LYING_CLAIMED_SIZE


@pytest.mark.parametrize("kind", ["safe", "traversal", "absolute", "symlink", "lying"])
def test_archives_are_byte_for_byte_reproducible(kind: str) -> None:
    assert _build(kind) == build_archive(kind)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        build_archive("tar")


async def test_archives_over_http(sim: Simulator) -> None:
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        for kind in ARCHIVE_KINDS:
            async with http.get(f"/_sim/archives/{kind}.zip") as response:
                assert response.status == 200, kind
                body = await response.read()
            assert body == build_archive(kind)
            digest = hashlib.sha256(body).hexdigest()
            assert response.headers["ETag"] == f'"{digest}"'
            assert response.headers["Content-Type"] == "application/zip"
            assert response.headers["Content-Length"] == str(len(body))
            assert response.headers["Accept-Ranges"] == "bytes"
            assert response.headers["Content-Disposition"] == f'attachment; filename="{kind}.zip"'
        async with http.get("/_sim/archives/safe.zip", headers={"Range": "bytes=4-"}) as reply:
            assert reply.status == 206
            assert await reply.read() == build_archive("safe")[4:]
        async with http.head("/_sim/archives/lying.zip") as reply:
            assert reply.headers["Content-Length"] == str(len(build_archive("lying")))
        for missing in ("/_sim/archives/tar.zip", "/_sim/archives/safe", "/_sim/archives/safe.tar"):
            async with http.get(missing) as reply:
                assert reply.status == 404, missing
    stats = sim.stats()
    assert list(stats["archives"]) == list(ARCHIVE_KINDS)
    for kind in ARCHIVE_KINDS:
        info = archive_info(kind)
        assert stats["archives"][kind] == {
            "size": info.size,
            "sha256": info.sha256,
            "entries": list(info.entries),
            "url_path": f"/_sim/archives/{kind}.zip",
        }
    whole = sum(info.size for info in built_archives().values())
    assert stats["requests"]["archive_bytes_served"] == whole + archive_info("safe").size - 4
