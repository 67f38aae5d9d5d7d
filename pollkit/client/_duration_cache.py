"""The durations pollkit learned in earlier runs, in a small JSON file under the user's cache.

What is kept: per group — provider, job kind and the bucketed spec numbers that change a
duration (`pollkit.core.learning.duration_group`: ``magichour:image``,
``magichour:video:end_seconds=8``) — the seconds the most recent jobs took, at most
`MAX_PER_GROUP` of them. Never a key, a job id, a URL, or a spec's text.

Where: ``$POLLKIT_CACHE_DIR/durations.json`` when set, else ``$XDG_CACHE_HOME/pollkit/``
(``~/.cache/pollkit/`` when unset) on Linux, ``~/Library/Caches/pollkit/`` on macOS,
``%LOCALAPPDATA%\\pollkit\\Cache\\`` on Windows. Opt out with ``POLLKIT_NO_CACHE=1`` or
``AsyncClient(learn=False)``; clear it by deleting the file (`clear`).

The file is written atomically (a temporary file in the same directory, then a rename) and
merged with what is on disk at that moment, so two processes that save at once lose at most
each other's latest samples, never the file. A file that cannot be read or parsed is ignored
(and replaced at the next save).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["MAX_PER_GROUP", "cache_path", "clear", "enabled", "load", "save"]

_log = logging.getLogger("pollkit.cache")

MAX_PER_GROUP = 1024
_VERSION = 1
_NAME = "durations.json"
_MAX_GROUPS = 256
_MAX_BYTES = 4_000_000  # a file larger than this was not written by pollkit


def cache_path() -> Path:
    """Where the durations file lives (it may not exist)."""
    explicit = os.environ.get("POLLKIT_CACHE_DIR")
    if explicit:
        return Path(explicit) / _NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pollkit" / _NAME
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(local) / "pollkit" / "Cache" / _NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pollkit" / _NAME


def enabled() -> bool:
    """False when ``POLLKIT_NO_CACHE`` is set to anything but ``0`` or empty."""
    return os.environ.get("POLLKIT_NO_CACHE", "") in ("", "0")


def _valid(groups: object) -> dict[str, list[float]]:
    """The well-formed part of a file's ``groups``: names to finite, positive seconds."""
    out: dict[str, list[float]] = {}
    if not isinstance(groups, dict):
        return out
    for name, values in list(groups.items())[:_MAX_GROUPS]:
        if not isinstance(name, str) or len(name) > 200 or not isinstance(values, list):
            continue
        seconds = [
            float(v)
            for v in values[-MAX_PER_GROUP:]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf
        ]
        if seconds:
            out[name] = seconds
    return out


def load(path: Path | None = None) -> dict[str, list[float]]:
    """The durations on disk per group, oldest first; empty when there is no usable file."""
    where = path or cache_path()
    try:
        if where.stat().st_size > _MAX_BYTES:
            _log.warning("ignoring %s: too large for a durations cache", where)
            return {}
        document = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        _log.warning("ignoring the durations cache %s: %s", where, exc)
        return {}
    if not isinstance(document, dict) or document.get("version") != _VERSION:
        return {}
    return _valid(document.get("groups"))


def save(new: Mapping[str, Sequence[float]], path: Path | None = None) -> None:
    """Add `new` durations per group to the file (created if missing), atomically.

    Failures (a read-only home, a full disk) are logged and otherwise ignored: the cache only
    saves requests, it is never worth failing a run for.
    """
    if not any(new.values()):
        return
    where = path or cache_path()
    merged = load(where)
    for group, values in new.items():
        kept = [*merged.get(group, []), *(float(v) for v in values if 0 < v < math.inf)]
        if kept:
            merged[group] = kept[-MAX_PER_GROUP:]
    document = {"version": _VERSION, "groups": dict(list(merged.items())[-_MAX_GROUPS:])}
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".durations-", dir=where.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(document, out, separators=(",", ":"))
            os.replace(temporary, where)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        _log.warning("could not save the durations cache %s: %s", where, exc)


def clear(path: Path | None = None) -> bool:
    """Delete the durations file; whether there was one."""
    try:
        (path or cache_path()).unlink()
    except FileNotFoundError:
        return False
    return True
