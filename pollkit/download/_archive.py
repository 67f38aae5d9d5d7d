"""Safe extraction of zip archives.

Every entry is checked before anything is written: no absolute paths, no drive letters, no
``..``, no symbolic links, no more than `max_entries`, a declared total under `max_bytes` and
no entry expanding more than `max_ratio` times. Headers can lie, so extraction also counts the
bytes actually produced and stops at the caps. Files are extracted into a staging folder inside
the target and moved into place only when the whole archive succeeded: a refused archive leaves
nothing behind, and nothing is ever written outside the target.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from pollkit.errors import DownloadError, StorageError, UnsafePath

__all__ = ["extract_zip"]

_BLOCK = 1 << 20


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The entry's relative path, or UnsafePath naming the entry."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafePath(f"archive entry {name!r} is a symbolic link")
    normalized = name.replace("\\", "/")
    path = PurePosixPath(normalized)
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafePath(f"archive entry {name!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafePath(f"archive entry {name!r} leaves the target directory")
    if "\0" in name or not path.parts:
        raise UnsafePath(f"archive entry {name!r} has an invalid name")
    return path


def _check(
    archive: zipfile.ZipFile, *, max_bytes: int, max_ratio: float, max_entries: int
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise UnsafePath(f"archive has {len(infos)} entries (limit {max_entries})")
    members, declared = [], 0
    for info in infos:
        path = _member_path(info)
        declared += info.file_size
        if declared > max_bytes:
            raise UnsafePath(f"archive expands past {max_bytes} bytes (at entry {info.filename!r})")
        if info.file_size > _BLOCK and info.file_size > max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise UnsafePath(
                f"archive entry {info.filename!r} expands {ratio:.0f}× (limit {max_ratio:g}×)"
            )
        members.append((info, path))
    return members


def extract_zip(
    archive_path: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    max_bytes: int = 4 << 30,
    max_ratio: float = 200.0,
    max_entries: int = 100_000,
) -> list[Path]:
    """Extract a zip archive into `target` (created if missing), safely.

    Args:
        archive_path: The zip file.
        target: Directory to extract into.
        max_bytes: Largest total size of the extracted files.
        max_ratio: Largest expansion of one entry (uncompressed / compressed).
        max_entries: Most entries accepted.

    Returns:
        The extracted files, in archive order.

    Raises:
        UnsafePath: An entry is unsafe or a cap was hit (the message names the entry); nothing
            was extracted.
        DownloadError: The file is not a valid zip archive.
        StorageError: The target cannot be written.
    """
    destination = Path(target)
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"not a valid zip archive: {exc}", path=str(archive_path)) from exc
    with archive:
        # Every entry is judged before the first byte is written, or a folder created.
        members = _check(archive, max_bytes=max_bytes, max_ratio=max_ratio, max_entries=max_entries)
        created = not destination.exists()
        try:
            destination.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".pollkit-extract-", dir=destination))
        except OSError as exc:
            raise StorageError(f"cannot extract: {exc.strerror}", path=str(destination)) from exc
        try:
            return _extract(
                archive, members, staging, destination, max_bytes=max_bytes, max_ratio=max_ratio
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(destination, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _extract(
    archive: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    staging: Path,
    destination: Path,
    *,
    max_bytes: int,
    max_ratio: float,
) -> list[Path]:
    """Write the checked entries into `staging`, then move them into `destination`."""
    try:
        written = 0
        for info, relative in members:
            out = staging.joinpath(*relative.parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            limit = max_bytes - written
            if info.file_size > _BLOCK:
                limit = min(limit, int(max_ratio * max(info.compress_size, 1)))
            written += _copy_capped(archive, info, out, limit)
        placed = []
        for info, relative in members:
            if info.is_dir():
                continue
            final = destination.joinpath(*relative.parts)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*relative.parts), final)
            placed.append(final)
        return placed
    except OSError as exc:
        raise StorageError(f"cannot extract: {exc.strerror}", path=str(destination)) from exc


def _copy_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, limit: int) -> int:
    """Copy one entry, counting the bytes really produced; stop at `limit`."""
    copied = 0
    try:
        with archive.open(info) as source, out.open("wb") as sink:
            while block := source.read(_BLOCK):
                copied += len(block)
                if copied > limit:
                    raise UnsafePath(
                        f"archive entry {info.filename!r} expands past its limit of {limit} bytes"
                    )
                sink.write(block)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"archive entry {info.filename!r} is corrupt: {exc}") from exc
    return copied
