"""Safe extraction: hostile archives are refused, naming the entry, with nothing written."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from pollkit import DownloadError, UnsafePath
from pollkit.download._archive import extract_zip


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_safe_archive_extracts_with_subdirectories(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "ok.zip", [("a.txt", b"alpha"), ("dir/b.bin", b"\x00" * 10), ("dir/", b"")]
    )
    out = tmp_path / "out"
    files = extract_zip(archive, out)
    assert [p.relative_to(out).as_posix() for p in files] == ["a.txt", "dir/b.bin"]
    assert (out / "a.txt").read_bytes() == b"alpha"
    assert listing(out) == ["a.txt", "dir", "dir/b.bin"]  # no staging folder left


def symlink_entry(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a.txt", b"ok"), ("../evil.txt", b"x")], "'../evil.txt' leaves the target"),
        ([("a/../../evil.txt", b"x")], "leaves the target"),
        ([("/tmp/pollkit-evil.txt", b"x")], "'/tmp/pollkit-evil.txt' has an absolute path"),
        ([("C:/evil.txt", b"x")], "absolute path"),
        ([("..\\evil.txt", b"x")], "leaves the target"),
        (
            [("a.txt", b"ok"), (symlink_entry("link", "../../outside"), b"../../outside")],
            "'link' is a symbolic link",
        ),
    ],
)
def test_hostile_entries_are_refused_and_nothing_is_written(
    tmp_path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]], message: str
) -> None:
    archive = make_zip(tmp_path / "bad.zip", entries)
    out = tmp_path / "sub" / "out"
    with pytest.raises(UnsafePath, match=message):
        extract_zip(archive, out)
    # Judged before anything is created: not even the target folder exists.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_zip_bomb_is_refused_by_ratio(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("zeros", b"\x00" * (16 << 20))])
    with pytest.raises(UnsafePath, match=r"'zeros' expands \d+× \(limit 200×\)"):
        extract_zip(archive, tmp_path / "out")
    assert listing(tmp_path / "out") == []


def test_total_size_cap(tmp_path: Path) -> None:
    entries = [
        (f"f{i}", bytes(range(256)) * 40) for i in range(10)
    ]  # 10 × 10 KiB, incompressible-ish
    archive = make_zip(tmp_path / "many.zip", entries)
    with pytest.raises(UnsafePath, match="expands past 50000 bytes"):
        extract_zip(archive, tmp_path / "out", max_bytes=50_000)
    assert listing(tmp_path / "out") == []


def test_lying_header_is_caught_by_the_bytes_produced(tmp_path: Path) -> None:
    # Declare 10 bytes, deliver 8 MiB: patch the size fields after writing the archive.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar", b"\x00" * (8 << 20))
    data = bytearray(buffer.getvalue())
    real = (8 << 20).to_bytes(4, "little")
    for offset in (i for i in range(len(data) - 4) if data[i : i + 4] == real):
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).getinfo("liar").file_size == 10
    # zipfile stops at the declared size and its CRC check fails: refused as corrupt.
    with pytest.raises(DownloadError, match="'liar' is corrupt"):
        extract_zip(path, tmp_path / "out")
    assert listing(tmp_path / "out") == []


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        extract_zip(path, tmp_path / "out")
