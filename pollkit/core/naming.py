"""File names for outputs, and what a reply's headers say about the file's identity."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from urllib.parse import unquote, urlsplit

__all__ = [
    "checksum_from_etag",
    "extension",
    "name_field",
    "render_name",
    "safe_name",
    "url_basename",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Types mimetypes gets wrong or leaves out on some systems.
_EXTENSIONS = {"image/jpeg": ".jpg", "video/mp4": ".mp4", "application/zip": ".zip"}


def url_basename(url: str | None) -> str:
    """The last path segment of `url`, percent-decoded ("" when there is none)."""
    if not url:
        return ""
    return posixpath.basename(unquote(urlsplit(url).path))


def extension(*, name: str = "", media_type: str | None = None) -> str:
    """The extension (with its dot) of `name`, else the usual one for `media_type`, else ""."""
    ext = posixpath.splitext(name)[1]
    if ext and len(ext) <= 10 and ext[1:].isalnum():
        return ext
    if media_type:
        kind = media_type.split(";", 1)[0].strip().lower()
        return _EXTENSIONS.get(kind) or mimetypes.guess_extension(kind) or ""
    return ""


def safe_name(name: str) -> bool:
    """Whether `name` is a plain file name: no directory part, nothing hidden, nothing special."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


def name_field(value: object) -> str:
    """A value from an API made fit for a file name: runs of other characters become ``_``."""
    return _UNSAFE_CHARS.sub("_", str(value)).strip("._") or "_"


def render_name(
    template: str,
    *,
    job_id: str | None,
    index: int,
    suggested: str,
    ext: str,
    kind: str | None = None,
    fields: dict[str, str] | None = None,
) -> str:
    """Fill the name template; the result is checked with `safe_name` by the caller.

    Args:
        fields: The provider's own fields, already made safe with `name_field`.

    Raises:
        KeyError: The template names a field there is not (the message lists those there are).
        ValueError: The template is malformed.
    """
    stem = posixpath.splitext(suggested)[0] if suggested else ""
    values: dict[str, object] = dict(fields or {})
    values.update(
        job_id=job_id or "download",
        index=index,
        name=stem or "output",
        ext=ext,
        kind=kind or "output",
    )
    try:
        return template.format(**values)
    except KeyError as exc:
        raise KeyError(f"no field {exc.args[0]!r} (fields: {', '.join(sorted(values))})") from None


def checksum_from_etag(etag: str | None) -> str | None:
    """The sha256 an ETag stands for, when it is a strong ETag holding exactly one.

    Servers that key files by content (the simulator, many object stores) use the digest as
    the ETag; anything else (nginx's mtime-size tags, weak tags) says nothing about the bytes.
    """
    if not etag or etag.startswith("W/"):
        return None
    value = etag.strip('"').lower()
    return value if _SHA256.match(value) else None
