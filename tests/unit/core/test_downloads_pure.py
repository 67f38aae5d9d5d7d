"""Pure decisions behind downloads: names, resume, bandwidth."""

from __future__ import annotations

import pytest

from pollkit.core.naming import checksum_from_etag, extension, render_name, safe_name, url_basename
from pollkit.core.ratelimit import TokenBucket
from pollkit.core.resume import Partial, ResumeAction, decide, range_headers, total_size

SHA = "ab" * 32


@pytest.mark.parametrize(
    ("name", "media_type", "expected"),
    [
        ("output-0.png", None, ".png"),
        ("output-0.png", "video/mp4", ".png"),  # the URL wins
        ("data", "video/mp4", ".mp4"),
        ("data", "image/jpeg; charset=x", ".jpg"),
        ("data", "application/zip", ".zip"),
        ("data", None, ""),
        ("weird.name with space", "image/png", ".png"),
        ("archive.tar.gz", None, ".gz"),
    ],
)
def test_extension(name: str, media_type: str | None, expected: str) -> None:
    assert extension(name=name, media_type=media_type) == expected


def test_url_basename_decodes_and_drops_the_query() -> None:
    assert url_basename("http://h/a/b/my%20file.png?sig=secret") == "my file.png"
    assert url_basename("http://h/") == ""
    assert url_basename(None) == ""


@pytest.mark.parametrize(
    ("name", "ok"), [("a.png", True), ("", False), ("..", False), ("a/b", False), ("a\\b", False)]
)
def test_safe_name(name: str, ok: bool) -> None:
    assert safe_name(name) is ok


def test_render_name_fields() -> None:
    fields = {
        "job_id": "j1",
        "index": 2,
        "suggested": "output-2.png",
        "ext": ".png",
        "kind": "image",
    }
    assert render_name("{job_id}-{index}{ext}", **fields) == "j1-2.png"  # type: ignore[arg-type]
    assert render_name("{kind}/{name}{ext}", **fields) == "image/output-2.png"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        (f'"{SHA}"', SHA),
        (f'"{SHA.upper()}"', SHA),
        (f'W/"{SHA}"', None),
        ('"5f3a-1c"', None),
        (None, None),
    ],
)
def test_checksum_from_etag(etag: str | None, expected: str | None) -> None:
    assert checksum_from_etag(etag) == expected


def test_range_headers_need_a_validator() -> None:
    assert range_headers(None) == {}
    assert range_headers(Partial(100)) == {}  # nothing to check the bytes against: restart
    assert range_headers(Partial(100, etag='"e1"')) == {"Range": "bytes=100-", "If-Range": '"e1"'}
    # A weak ETag cannot validate a range; the date can.
    weak = Partial(100, etag='W/"e1"', last_modified="Mon, 23 Nov 2026 07:00:00 GMT")
    assert range_headers(weak)["If-Range"] == "Mon, 23 Nov 2026 07:00:00 GMT"


@pytest.mark.parametrize(
    ("partial", "status", "headers", "action"),
    [
        (None, 200, {"Content-Length": "10"}, ResumeAction.RESTART),
        (Partial(4, '"e"'), 206, {"Content-Range": "bytes 4-9/10"}, ResumeAction.APPEND),
        (Partial(4, '"e"'), 206, {"Content-Range": "bytes 0-9/10"}, ResumeAction.RESTART),
        (Partial(4, '"e"'), 200, {"Content-Length": "10"}, ResumeAction.RESTART),  # If-Range failed
        (Partial(10, '"e"'), 416, {"Content-Range": "bytes */10"}, ResumeAction.COMPLETE),
        (Partial(12, '"e"'), 416, {"Content-Range": "bytes */10"}, ResumeAction.RESTART),
    ],
)
def test_resume_decisions(
    partial: Partial | None, status: int, headers: dict[str, str], action: ResumeAction
) -> None:
    assert decide(partial, status, headers) is action


def test_resume_refuses_unexpected_statuses() -> None:
    with pytest.raises(ValueError, match="HTTP 302"):
        decide(None, 302, {})


def test_total_size() -> None:
    assert total_size(200, {"Content-Length": "10"}) == 10
    assert total_size(206, {"Content-Range": "bytes 4-9/10", "Content-Length": "6"}) == 10
    assert total_size(206, {"Content-Range": "bytes 4-9/*"}) is None
    assert total_size(200, {}) is None


def test_token_bucket_holds_the_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=10.0)
    assert bucket.reserve(10, now=0.0) == 0.0  # the burst
    assert bucket.reserve(50, now=0.0) == pytest.approx(0.5)  # 50 tokens at 100/s
    assert bucket.reserve(50, now=0.5) == pytest.approx(0.5)  # the debt is paid in order
    # Over a long run the total wait is the volume divided by the rate, whatever the chunks.
    bucket, waited, now = TokenBucket(rate=1000.0, burst=100.0), 0.0, 0.0
    for _ in range(100):
        wait = bucket.reserve(100, now)
        now += wait
        waited += wait
    assert waited == pytest.approx((100 * 100 - 100) / 1000.0)
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0)
