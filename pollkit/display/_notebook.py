"""HTML for Jupyter: a `Result`, and a batch of them (`Results`), as a status table and a
gallery of the downloaded images.

Images are embedded as ``data:`` URIs made of the files' own bytes (no imaging library, no
network, no JavaScript) and scaled down by CSS. A file over `MAX_EMBED_BYTES` is named instead
of embedded, so one huge output cannot bloat a notebook. Every string that came from a server
or the disk — job ids, statuses, errors, paths — is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pollkit.models import Result, Status

__all__ = ["MAX_EMBED_BYTES", "MAX_THUMBNAILS", "Results", "render_result", "render_results"]

MAX_EMBED_BYTES = 2 * 1024 * 1024
"""Largest image file embedded in the HTML; bigger ones are listed by name."""

MAX_THUMBNAILS = 48
"""Most images a batch's gallery shows; the rest are counted."""

_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_STATUS_COLOURS = {
    Status.COMPLETE: "#1a7f37",
    Status.ERROR: "#cf222e",
    Status.CANCELED: "#6e7781",
    Status.RENDERING: "#0969da",
    Status.QUEUED: "#9a6700",
    Status.DRAFT: "#6e7781",
}

_DIGEST_KEY = re.compile(r"sha256:([0-9a-f]{64})")
_SHORT_KEY = 12  # hex digits: as many as a long-lived git repository shows

_TABLE = 'style="border-collapse:collapse;text-align:left;font-size:0.9em"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #ddd;vertical-align:top"'


class Results(list[Result]):
    """A list of `Result`s that Jupyter shows as a table (one row per job, counts per status)
    and a gallery of the downloaded images::

        results = pollkit.Results(client.run(specs, download_directory="out"))
        results          # the last expression of a cell renders it
    """

    def counts(self) -> dict[Status, int]:
        """How many jobs ended in each status (statuses with no job are left out)."""
        counted = Counter(result.status for result in self)
        return {status: counted[status] for status in Status if counted[status]}

    def _repr_html_(self) -> str:
        return render_results(self)


def render_result(result: Result, *, max_embed_bytes: int = MAX_EMBED_BYTES) -> str:
    """Render one job as HTML: its status table, then its images.

    Args:
        result: The job's result.
        max_embed_bytes: Largest image file embedded; bigger ones are only named.

    Returns:
        An HTML fragment (no script, no external resource).
    """
    state = result.state
    rows = [
        ("job", _code(state.job_id)),
        ("provider", _text(state.provider) + (f" ({_text(state.kind)})" if state.kind else "")),
        ("status", _status(result)),
    ]
    if result.key is not None:
        rows.insert(1, ("key", _code(result.key)))
    errors = _errors(result)
    if errors:
        rows.append(("error", errors))
    rows.append(("polls", str(result.polls)))
    files = [*result.downloaded_paths, *result.extracted_paths]
    if files:
        listed = "<br>".join(f"{_path(path)} {_size(path)}" for path in files)
        rows.append(("files", listed))
    table = "".join(
        f"<tr><th {_CELL}>{name}</th><td {_CELL}>{value}</td></tr>" for name, value in rows
    )
    images = [path for path in files if _media_type(path)]
    gallery = _gallery(images, size=256, max_embed_bytes=max_embed_bytes)
    return f'<div class="pollkit-result"><table {_TABLE}>{table}</table>{gallery}</div>'


def render_results(
    results: Iterable[Result],
    *,
    max_thumbnails: int = MAX_THUMBNAILS,
    max_embed_bytes: int = MAX_EMBED_BYTES,
) -> str:
    """Render a batch as HTML: counts per status, one table row per job, then a gallery.

    Args:
        results: The jobs' results, in the order to show them.
        max_thumbnails: Most images shown; the gallery says how many more there are.
        max_embed_bytes: Largest image file embedded; bigger ones are only named.

    Returns:
        An HTML fragment (no script, no external resource).
    """
    results = list(results)
    counted = Counter(result.status for result in results)
    summary = ", ".join(f"{counted[s]} {_text(s.value)}" for s in Status if counted[s])
    noun = "job" if len(results) == 1 else "jobs"
    head = "".join(
        f"<th {_CELL}>{name}</th>" for name in ("key", "job", "status", "polls", "files", "error")
    )
    body = "".join(_row(result) for result in results)
    images = [
        path
        for result in results
        for path in (*result.downloaded_paths, *result.extracted_paths)
        if _media_type(path)
    ]
    shown = images[: max(max_thumbnails, 0)]
    gallery = _gallery(shown, size=160, max_embed_bytes=max_embed_bytes)
    if len(images) > len(shown):
        more = len(images) - len(shown)
        gallery += f"<p>… and {more} more image{'s' if more != 1 else ''}</p>"
    return (
        f'<div class="pollkit-results"><p><b>{len(results)} {noun}</b>'
        f"{': ' + summary if summary else ''}</p>"
        f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"{gallery}</div>"
    )


def _row(result: Result) -> str:
    files = [*result.downloaded_paths, *result.extracted_paths]
    total = sum(_stat_size(path) or 0 for path in files)
    listed = f"{len(files)} ({_human(total)})" if files else ""
    cells = (
        _key(result.key) if result.key is not None else "",
        _code(result.job_id),
        _status(result),
        str(result.polls),
        listed,
        _errors(result),
    )
    return "<tr>" + "".join(f"<td {_CELL}>{cell}</td>" for cell in cells) + "</tr>"


@dataclass(frozen=True, slots=True)
class _Thumbnail:
    path: Path
    data: bytes | None  # None: not embedded
    reason: str = ""


def _thumbnails(paths: Iterable[Path], max_embed_bytes: int) -> Iterator[_Thumbnail]:
    for path in paths:
        try:
            with path.open("rb") as file:
                # Read one byte past the cap: a file that grew since it was listed is not
                # read whole either.
                data = file.read(max_embed_bytes + 1)
        except OSError:
            yield _Thumbnail(path, None, "missing")
            continue
        if len(data) > max_embed_bytes:
            yield _Thumbnail(path, None, f"{_size(path)} not embedded")
        else:
            yield _Thumbnail(path, data)


def _gallery(paths: list[Path], *, size: int, max_embed_bytes: int) -> str:
    if not paths:
        return ""
    figures = []
    for thumbnail in _thumbnails(paths, max_embed_bytes):
        name = _path(thumbnail.path)
        if thumbnail.data is None:
            figure = f"<div>{name}<br><i>{_text(thumbnail.reason)}</i></div>"
        else:
            encoded = base64.b64encode(thumbnail.data).decode("ascii")
            uri = f"data:{_media_type(thumbnail.path)};base64,{encoded}"
            figure = (
                f'<img src="{uri}" alt="{_text(thumbnail.path.name)}" '
                f'style="max-width:{size}px;max-height:{size}px;display:block">{name}'
            )
        figures.append(f'<figure style="margin:0;font-size:0.8em">{figure}</figure>')
    return (
        '<div class="pollkit-gallery" style="display:flex;flex-wrap:wrap;gap:8px;'
        f'margin-top:8px;align-items:flex-end">{"".join(figures)}</div>'
    )


def _media_type(path: Path) -> str | None:
    return _MEDIA_TYPES.get(path.suffix.lower())


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _code(value: object) -> str:
    return f"<code>{_text(value)}</code>"


def _key(key: str) -> str:
    """A spec's key for the table: a digest key (``sha256:`` + 64 hex, `spec_key`) as its first
    12 hex digits, as git shortens commits, with the whole key in the tooltip; the full digest
    took half the table's width. A key the user chose is shown as given."""
    match = _DIGEST_KEY.fullmatch(key)
    if match is None:
        return _code(key)
    return f'<code title="{_text(key)}">{match.group(1)[:_SHORT_KEY]}</code>'


def _path(path: Path) -> str:
    return f'<span title="{_text(path)}">{_text(path.name)}</span>'


def _status(result: Result) -> str:
    state = result.state
    colour = _STATUS_COLOURS.get(state.status, "inherit")
    shown = f'<b style="color:{colour}">{_text(state.status.value)}</b>'
    if state.native_status and state.native_status != state.status.value:
        shown += f" ({_text(state.native_status)})"
    if state.progress is not None and not state.is_terminal:
        shown += f" {state.progress:.0%}"
    return shown


def _errors(result: Result) -> str:
    parts = []
    if result.state.error is not None:
        parts.append(_text(result.state.error))
    if result.error is not None:
        parts.append(f"{_text(type(result.error).__name__)}: {_text(result.error)}")
    return "<br>".join(parts)


def _stat_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _size(path: Path) -> str:
    size = _stat_size(path)
    return "(missing)" if size is None else f"({_human(size)})"


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
