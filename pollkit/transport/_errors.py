"""pollkit's errors for what the network and servers answer: the one mapping from aiohttp's
exceptions and from HTTP statuses (with the server's message, from any common error envelope).
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pollkit.core.retry import parse_retry_after
from pollkit.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    InvalidRequest,
    NotFound,
    NotReady,
    PollkitError,
    RateLimited,
    ReadTimeout,
    ServerError,
    TransportError,
)
from pollkit.providers.base import Response

__all__ = ["error_for_status", "redact_url", "transport_error"]


def redact_url(url: str) -> str:
    """The URL without its query string and credentials: signed URLs carry secrets there."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# Failures that happen before a request is written: the connection was never made, so the
# server cannot have seen it (a submit that meets one may be sent again). A DNS or TLS failure
# is a ClientConnectorError; a connect timeout (`sock_connect`) is ConnectionTimeoutError.
_NEVER_SENT = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerFingerprintMismatch,
    aiohttp.ConnectionTimeoutError,
)


def transport_error(
    exc: BaseException, *, operation: str, job_id: str | None, url: str
) -> PollkitError:
    """The pollkit error for an aiohttp or socket failure (raise it ``from exc``).

    Its `TransportError.sent` is False only when aiohttp failed before the connection existed.
    """
    where = redact_url(url)
    sent = not isinstance(exc, _NEVER_SENT)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ReadTimeout(
            f"connect timed out ({where})", operation=operation, job_id=job_id, sent=False
        )
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return ReadTimeout(f"timed out ({where})", operation=operation, job_id=job_id)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"{operation}: invalid URL {where!r}")
    if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)):
        reason = type(exc).__name__
        return ConnectError(
            f"connection failed: {reason} ({where})", operation=operation, job_id=job_id, sent=sent
        )
    return TransportError(
        f"{type(exc).__name__} ({where})", operation=operation, job_id=job_id, sent=sent
    )


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
# What HTTP forbids in a header value (a tab is allowed).


def _page_text(page: str) -> str | None:
    """The gist of an HTML error page (a proxy's 502, a login wall): its title, else its first
    line of text. Its first raw line says nothing (``<html>``)."""
    # Its head is enough, and the cap bounds the regexes (quadratic on unclosed tags).
    page = page[:4096]
    title = _TITLE.search(page)
    lines = [title.group(1)] if title else []
    lines += _TAG.sub("\n", _HIDDEN.sub("", page)).splitlines()
    for line in lines:
        text = " ".join(html.unescape(line).split())
        if text:
            return text[:200]
    return None


def _server_message(body: Any) -> tuple[str | None, list[Any]]:
    """The server's message and field details, from the common error envelopes.

    Handles ``{"message": ...}`` (Magic Hour, Pixy), ``{"detail": "..."}`` and
    ``{"detail": [...]}`` (FastAPI), and ``{"detail": {"message", "details"}}`` (PiXYZ).
    """
    if isinstance(body, str):
        if body.lstrip().startswith("<"):
            page = _page_text(body)
            return (f"{page} (an HTML page, not the API's reply)" if page else None), []
        text = body.strip().splitlines()[0] if body.strip() else None
        return (text[:200] if text else None), []
    if not isinstance(body, Mapping):
        return None, []
    detail = body.get("detail")
    if isinstance(detail, list):
        msgs = [str(d.get("msg", d)) if isinstance(d, Mapping) else str(d) for d in detail]
        return "; ".join(msgs) or None, list(detail)
    if isinstance(detail, Mapping):
        parts = [str(detail[k]) for k in ("message", "details") if detail.get(k)]
        return ": ".join(parts) or None, []
    message = body.get("message")
    if isinstance(message, str):
        return message, list(body.get("errors") or [])
    if isinstance(detail, str):
        return detail, []
    return None, []


def error_for_status(response: Response, secrets: Iterable[str] = ()) -> APIError | None:
    """The error a reply stands for, or None for 1xx–3xx."""
    status = response.status
    if status < 400:
        return None
    try:
        body: Any = response.json()
    except PollkitError:
        body = response.body.decode("utf-8", "replace")
    message, details = _server_message(body)
    if message:
        for secret in secrets:
            if secret:
                message = message.replace(secret, "[redacted]")
    kwargs: dict[str, Any] = {
        "status_code": status,
        "server_message": message,
        "body": body,
        "headers": response.headers,
        "operation": response.request.operation,
        "job_id": response.request.job_id,
    }
    if status in (401, 403):
        return AuthenticationError(**kwargs)
    if status == 404:
        return NotFound(**kwargs)
    if status in (400, 422):
        return InvalidRequest(details=details, **kwargs)
    if status == 425:
        return NotReady(**kwargs)
    if status == 429:
        return RateLimited(
            retry_after=parse_retry_after(response.headers.get("Retry-After")), **kwargs
        )
    if status >= 500:
        return ServerError(**kwargs)
    return APIError(**kwargs)
