"""One live run per SQLite journal: a kernel lock on a file beside it.

Two runs of one batch (a cron job that overlaps itself, a second terminal) would both read
the journal, both find specs not yet recorded, and both submit them. So a run takes an
exclusive `fcntl.flock` on ``<journal>.lock`` before it reads anything, and a second run is
refused at once with `JournalBusy`, naming the first (pid, host, since when: written into the
lock file). The kernel releases the lock when its holder dies, even by SIGKILL, so a journal
left by a dead run is taken over without any check of pids or clocks. (Several runners on one
batch is what a PostgreSQL journal is for.)

`check_journal_location` refuses a ``--journal`` value that is a URL pollkit cannot open
(any but ``postgresql://``, which `open_journal` opens before it gets here), rather than
creating a file named after it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from pollkit.errors import ConfigurationError, JournalBusy, StorageError

__all__ = ["JournalLock", "check_journal_location"]

_log = logging.getLogger("pollkit.journal")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_journal_location(location: str | os.PathLike[str]) -> Path:
    """The journal file `location` names.

    Args:
        location: A file path.

    Returns:
        It as a `Path`.

    Raises:
        ConfigurationError: It looks like a URL (``scheme://…``) other than a PostgreSQL one.
            The message names the scheme only, since a URL may hold a password.
    """
    text = os.fspath(location)
    match = _URL.match(text)
    if match:
        raise ConfigurationError(
            f"journal: cannot open a {match.group(1)}:// journal; pollkit keeps journals in"
            " SQLite files (give a file path) or PostgreSQL (a postgresql:// URL)"
        )
    return Path(text)


class JournalLock:
    """The exclusive claim of one run on a journal; release it with `release` (or ``with``).

    Args:
        journal_path: The journal file; the lock is ``<journal_path>.lock`` beside it.

    Raises:
        JournalBusy: Another live process holds it.
        StorageError: The lock file cannot be created.
    """

    def __init__(self, journal_path: str | os.PathLike[str]) -> None:
        self.path = Path(os.fspath(journal_path) + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Not truncated on open: the holder's record must stay readable for the refusal.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create the journal's lock: {exc.strerror or exc}",
                path=str(self.path),
                operation=None,
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalBusy(
                path=str(journal_path),
                pid=_int_or_none(holder.get("pid")),
                host=_str_or_none(holder.get("host")),
                since=_str_or_none(holder.get("since")),
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(
                f"cannot lock the journal: {exc.strerror or exc}",
                path=str(self.path),
                operation=None,
            ) from exc
        self._fd: int | None = fd
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # the lock holds without the record; the refusal says less
            _log.warning("journal lock %s: cannot write the holder's record", self.path)
        _log.debug("journal lock %s taken by pid %d", self.path, record["pid"])

    def release(self) -> None:
        """Let another run take the journal. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # The record is left in place: truncating it before unlocking would race a
            # newcomer's write. A stale record under a free lock is never read.
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> JournalLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None
