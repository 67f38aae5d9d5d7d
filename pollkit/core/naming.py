"""File names for outputs, and what a reply's headers say about the file's identity."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from urllib.parse import unquote, urlsplit

__all__ = ["checksum_from_etag", "extension", "render_name", "safe_name", "url_basename"]

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


def render_name(
    template: str,
    *,
    job_id: str | None,
    index: int,
    suggested: str,
    ext: str,
    kind: str | None = None,
) -> str:
    """Fill the name template; the result is checked with `safe_name` by the caller.

    Raises:
        KeyError, ValueError: The template is malformed.
    """
    stem = posixpath.splitext(suggested)[0] if suggested else ""
    return template.format(
        job_id=job_id or "download",
        index=index,
        name=stem or "output",
        ext=ext,
        kind=kind or "output",
    )


def checksum_from_etag(etag: str | None) -> str | None:
    """The sha256 an ETag stands for, when it is a strong ETag holding exactly one.

    Servers that key files by content (the simulator, many object stores) use the digest as
    the ETag; anything else (nginx's mtime-size tags, weak tags) says nothing about the bytes.
    """
    if not etag or etag.startswith("W/"):
        return None
    value = etag.strip('"').lower()
    return value if _SHA256.match(value) else None
