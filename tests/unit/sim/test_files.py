"""Generated files (PNG checked chunk by chunk, without Pillow) and Range parsing."""

from __future__ import annotations

import struct

import pytest

from pollkit.sim.transfer._files import (
    FileStore,
    RangeNotSatisfiable,
    make_png,
    make_video,
    parse_range,
)
from tests.e2e.sim.helpers import parse_png


def test_png_is_valid_and_has_the_requested_size() -> None:
    width, height, _ = parse_png(make_png(37, 11, b"key"))
    assert (width, height) == (37, 11)


def test_png_is_deterministic_and_differs_per_key() -> None:
    assert make_png(16, 16, b"a") == make_png(16, 16, b"a")
    assert parse_png(make_png(16, 16, b"a"))[2] != parse_png(make_png(16, 16, b"b"))[2]


def test_video_starts_with_ftyp_and_has_the_exact_size() -> None:
    data = make_video(4096, b"k")
    assert len(data) == 4096
    assert data[4:8] == b"ftyp"
    (ftyp_size,) = struct.unpack(">I", data[:4])
    assert data[ftyp_size + 4 : ftyp_size + 8] == b"mdat"
    assert struct.unpack(">I", data[ftyp_size : ftyp_size + 4])[0] == 4096 - ftyp_size
    assert make_video(4096, b"k") == data
    assert make_video(4096, b"j") != data


def test_file_store_evicts_bytes_but_regenerates_them_identically() -> None:
    store = FileStore(seed=1, image_size=(8, 8), video_bytes=1000, cache_bytes=1500)
    first_info, first = store.get("job1", 0, "output-0.mp4", "video/mp4")
    store.get("job2", 0, "output-0.mp4", "video/mp4")  # pushes job1 out of the cache
    again_info, again = store.get("job1", 0, "output-0.mp4", "video/mp4")
    assert again == first
    assert again_info == first_info
    assert first_info.size == 1000
    assert first_info.etag == f'"{first_info.sha256}"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=50-5000", (50, 99)),
        ("bytes=5-1", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: served whole
        ("items=0-1", None),
        ("bytes=a-b", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)
