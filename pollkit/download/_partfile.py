"""The partial file of one download: ``<name>.part``, its validator, and moving it into place.

Everything here blocks (disk I/O); the download engine runs it in its writer pool.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pollkit.core.resume import Partial
from pollkit.display._progress import NullProgress, ProgressSink
from pollkit.errors import StorageError

__all__ = ["PartFile", "file_matches", "sha256_file"]

_log = logging.getLogger("pollkit.download")
_BLOCK = 1 << 20
# Bytes per write() call. On the 2-core VMs measured (benchmarks/README.md), 1 GB written in
# 1 MiB calls cost 2.1-3.5 s of system time once the kernel had to find fresh page-cache memory,
# against 0.4-1.2 s in 64 KiB calls; the extra calls cost nothing measurable.
_WRITE_SIZE = 64 << 10


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_matches(path: Path, size: int, sha256: str | None) -> bool:
    """Whether `path` holds `size` bytes (and `sha256`, when known)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
    except OSError:
        return False
    return sha256 is None or sha256_file(path) == sha256


@dataclass
class PartFile:
    """Where one output goes, and its partial file while it downloads.

    `written` always equals the bytes in the `.part` and in `digest`. Every method blocks.
    """

    path: Path
    expected_sha256: str | None
    progress: ProgressSink = field(default_factory=NullProgress)
    handle: io.FileIO | None = None
    digest: Any = field(default_factory=hashlib.sha256)
    written: int = 0
    etag: str | None = None
    last_modified: str | None = None
    announced: bool = False  # the file's size was added to the progress total
    existing_size: int | None = None  # size of a file already at `path`, if any

    @property
    def part(self) -> Path:
        """The partial file."""
        return self.path.with_name(self.path.name + ".part")

    @property
    def meta(self) -> Path:
        """The validator of the partial file's bytes, kept beside it."""
        return self.path.with_name(self.path.name + ".part.json")

    def partial(self) -> Partial | None:
        """What is on disk, as the resume decisions see it."""
        if self.written == 0:
            return None
        return Partial(self.written, etag=self.etag, last_modified=self.last_modified)

    def open(self) -> None:
        """Open (or reopen) the `.part`, locked against other processes, and take stock.

        Sets what is already on disk: the partial file (hashed once: only a resume across
        processes reads bytes twice), its saved validator, and the size of a finished file at
        the target.

        Raises:
            StorageError: The directory cannot be made, or another process holds the `.part`.
            OSError: The `.part` cannot be opened.
        """
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # mkdir's EEXIST ("File exists") means a file holds the directory's name.
            reason = "it is not a directory" if isinstance(exc, FileExistsError) else exc.strerror
            raise StorageError(
                f"cannot use download directory: {reason}", path=str(folder)
            ) from exc
        # Unbuffered: the engine hands whole batches of received pieces to `write`, and a
        # buffer would only copy them once more.
        handle = open(self.part, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StorageError(
                "another process is downloading this file", path=str(self.part)
            ) from None
        self.handle = handle
        try:
            self.existing_size = self.path.stat().st_size if self.path.is_file() else None
        except OSError:
            self.existing_size = None
        self.digest = hashlib.sha256()
        self.written = handle.tell()
        if self.written == 0:
            return
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict):
            self.etag, self.last_modified = meta.get("etag"), meta.get("last_modified")
        with self.part.open("rb") as previous:
            while block := previous.read(_BLOCK):
                self.digest.update(block)

    def restart(self, resumable: bool) -> None:
        """Empty the `.part`; keep the new validator beside it when worth resuming."""
        assert self.handle is not None
        if self.written:
            self.handle.truncate(0)
            self.handle.seek(0)
            self.digest = hashlib.sha256()
            self.written = 0
        if resumable:
            tmp = self.meta.with_name(self.meta.name + ".tmp")
            tmp.write_text(json.dumps({"etag": self.etag, "last_modified": self.last_modified}))
            os.replace(tmp, self.meta)

    def write(self, pieces: list[bytes]) -> int:
        """Append and hash `pieces`, in order; return how many bytes that was.

        The caller counts `written` once this returned: bytes of a failed call may be partly
        on disk, and a resume starts from the file's real size anyway.
        """
        total = 0
        for piece in pieces:
            self.digest.update(piece)
            self.append(piece)
            total += len(piece)
        return total

    def append(self, data: bytes | memoryview) -> None:
        """Append `data` without hashing it: the caller hashes it next (`digest.update`), in
        another thread while the next bytes are appended, and counts it after that."""
        assert self.handle is not None
        view = memoryview(data)
        while view:  # a regular file takes it all, but write() may legally take less
            done = self.handle.write(view[:_WRITE_SIZE])
            view = view[done or 0 :]

    def close(self) -> None:
        """Close the `.part`, which also releases the lock."""
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.close()

    def release(self) -> None:
        """Close after a failure; keep the `.part` only when it holds bytes to resume from.

        Never raises: closing flushes, and on a full disk the flush fails again. Bytes that
        did not reach the disk are simply not in the `.part`; a resume starts from its size.
        """
        if self.handle is None:
            return  # never opened, or held by another process: not ours to remove
        try:
            self.close()
        except OSError as exc:
            _log.debug("closing %s after a failure: %s", self.part, exc)
        try:
            empty = self.part.stat().st_size == 0
        except OSError:
            return
        if empty:
            self.part.unlink(missing_ok=True)
            self.meta.unlink(missing_ok=True)

    def keep_existing(self) -> tuple[int, str]:
        """Give up the `.part` for the file already at the target; its size and sha256."""
        sha256 = sha256_file(self.path)
        size = self.path.stat().st_size
        self.close()
        self.part.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)
        return size, sha256

    def finish(self, existing: str, fsync: bool) -> tuple[Path, bool]:
        """Close the `.part` and move it into place under the existing-file policy.

        Returns where the file is, and whether an identical file there was kept instead.
        """
        assert self.handle is not None
        if fsync:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        size, sha256 = self.written, self.digest.hexdigest()
        try:
            for n in range(10_000):
                stem, suffix = self.path.stem, self.path.suffix
                candidate = self.path.with_name(f"{stem} ({n}){suffix}") if n else self.path
                if not candidate.exists() or (n == 0 and existing == "overwrite"):
                    if n:
                        _log.info(
                            "%s holds other bytes; saved as %s", self.path.name, candidate.name
                        )
                    os.replace(self.part, candidate)
                    return candidate, False
                if file_matches(candidate, size, sha256):
                    self.part.unlink()
                    return candidate, True
            raise StorageError("no free file name", path=str(self.path))
        finally:
            self.meta.unlink(missing_ok=True)
            self.close()
