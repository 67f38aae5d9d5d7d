"""flux0: request shapes, the stream-to-status mapping of docs/apis/flux0.md, patches, stored events
(no simulator, no sockets)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollkit import ConfigurationError, ProtocolError, Status
from pollkit.providers.base import Request, Response
from pollkit.providers.flux0 import Flux0, RunTracker, message_text

BASE = "http://flux0.test:8080"
NOW = datetime(2025, 7, 1, 9, tzinfo=timezone.utc)
SID = "a1B2c3D4e5"
CID = "RID(x1x2x3x4x5)::Zz9Yy8Xx7W"
fx = Flux0(base_url=BASE + "/")


def status_block(status: str, data: Any = None, event_id: str = "Rn4kQ2xVb8") -> bytes:
    inner: dict[str, Any] = {"type": "status", "status": status}
    if data is not None:
        inner["data"] = data
    payload = {
        "id": event_id,
        "source": "ai_agent",
        "type": "status",
        "correlation_id": CID,
        "data": inner,
        "metadata": None,
    }
    return f"event: status\nid: {event_id}\ndata: {json.dumps(payload)}\n\n".encode()


def chunk_block(*values: str, path: str = "/-") -> bytes:
    payload = {
        "correlation_id": CID,
        "event_id": "Qm3vT7pL1s",
        "seq": 0,
        "patches": [{"op": "add", "path": path, "value": v} for v in values],
        "metadata": {"agent_id": "Ag7kP3mN9q", "agent_name": "Drizzle"},
        "timestamp": 1751360400.12,
    }
    return f"event: chunk\ndata: {json.dumps(payload)}\n\n".encode()


def track(*blocks: bytes) -> tuple[RunTracker, list[Any]]:
    tracker = RunTracker(fx, SID, NOW)
    states = tracker.feed(b"".join(blocks), NOW)
    return tracker, states


# -- requests ----------------------------------------------------------------------------------


def test_request_shapes() -> None:
    request = fx.create_event_request(SID, "hi")
    assert (request.method, request.url) == ("POST", f"{BASE}/api/sessions/{SID}/events/stream")
    assert request.json_body == {"type": "message", "source": "user", "content": "hi"}
    assert request.headers["Accept"] == "text/event-stream"
    assert "Last-Event-ID" not in request.headers
    events = fx.list_events_request(
        SID, correlation_id=CID, types=("message", "status"), min_offset=3, source="ai_agent"
    )
    assert events.url == (
        f"{BASE}/api/sessions/{SID}/events?min_offset=3&source=ai_agent"
        "&correlation_id=RID%28x1x2x3x4x5%29%3A%3AZz9Yy8Xx7W&types=message&types=status"
    )
    assert fx.final_message_request(f"{SID}/{CID}").url.endswith("&types=message")
    assert fx.create_agent_request("A", "t").json_body == {"name": "A", "type": "t"}
    session = fx.create_session_request("Ag7kP3mN9q", title="T", allow_greeting=True)
    assert session.url == f"{BASE}/api/sessions?allow_greeting=true"
    assert session.json_body == {"agent_id": "Ag7kP3mN9q", "title": "T"}
    assert fx.list_sessions_request("Ag7kP3mN9q").url == f"{BASE}/api/sessions?agent_id=Ag7kP3mN9q"
    assert fx.agent_request("Ag7kP3mN9q").url == f"{BASE}/api/agents/Ag7kP3mN9q"
    assert fx.secrets == ()


def test_user_cookie() -> None:
    request = Flux0(base_url=BASE, user="ada lovelace").list_agents_request()
    assert request.headers["Cookie"] == "flux0_user_sub=ada%20lovelace"
    assert "Cookie" not in fx.list_agents_request().headers


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fx.create_event_request(SID, ""), "non-empty content"),
        (lambda: fx.create_agent_request("", "t"), "1-100"),
        (lambda: fx.submit_request({"content": "x"}), "session_id"),
        (lambda: fx.status_requests("no-slash", None), "session id"),
    ],
)
def test_invalid_arguments(call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call()


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX0_BASE_URL", "http://elsewhere:1/")
    assert Flux0().base_url == "http://elsewhere:1"
    monkeypatch.delenv("FLUX0_BASE_URL")
    assert Flux0().base_url == "http://127.0.0.1:8080"


# -- the stream --------------------------------------------------------------------------------


def test_open_stream_is_queued() -> None:
    tracker = RunTracker(fx, SID, NOW)
    assert (tracker.state.status, tracker.state.native_status) == (Status.QUEUED, "open")


MAPPING = [
    ("acknowledged", Status.QUEUED),
    ("processing", Status.RENDERING),
    ("typing", Status.RENDERING),
    ("ready", Status.COMPLETE),
    ("completed", Status.COMPLETE),
    ("error", Status.ERROR),
    ("cancelled", Status.CANCELED),
]


@pytest.mark.parametrize(("native", "expected"), MAPPING)
def test_status_mapping(native: str, expected: Status) -> None:
    tracker, states = track(status_block(native))
    assert states[-1].status is expected
    assert states[-1].native_status == native
    assert tracker.job_id == f"{SID}/{CID}"


def test_a_full_run_then_server_close_is_complete() -> None:
    tracker, states = track(
        status_block("acknowledged"),
        status_block("processing", {}),
        status_block("typing"),
        chunk_block("Hello"),
        chunk_block(" there"),
    )
    assert [s.status for s in states] == [Status.QUEUED] + [Status.RENDERING] * 4
    assert [s.raw["text"] for s in states[-2:]] == ["Hello", "Hello there"]
    final = tracker.closed(NOW)
    assert (final.status, final.native_status) == (Status.COMPLETE, "stream_closed")


def test_error_status_is_terminal_with_reason_and_sticky() -> None:
    tracker, states = track(status_block("error", {"exception": "boom"}), chunk_block("late"))
    assert states[-1].status is Status.ERROR
    assert states[-1].error is not None
    assert "boom" in states[-1].error.message
    assert tracker.closed(NOW).status is Status.ERROR  # a close after error stays an error
    assert tracker.text == ""  # chunks after a terminal state are ignored


def test_cancelled_then_close_stays_canceled() -> None:
    tracker, _ = track(status_block("cancelled"))
    assert tracker.closed(NOW).status is Status.CANCELED


def test_unknown_status_is_rule_1(caplog: pytest.LogCaptureFixture) -> None:
    provider = Flux0(base_url=BASE)
    tracker = RunTracker(provider, SID, NOW)
    with caplog.at_level(logging.WARNING, "pollkit.providers"):
        states = tracker.feed(status_block("processing") + status_block("thinking"), NOW)
        tracker.feed(status_block("thinking"), NOW)
    assert (states[-1].status, states[-1].native_status) == (Status.RENDERING, "thinking")
    assert sum("thinking" in r.getMessage() for r in caplog.records) == 1
    assert not tracker.state.is_terminal


@pytest.mark.parametrize(
    "block",
    [
        b'event: message\ndata: {"a": 1}\n\n',  # a non-conforming event name
        b"event: status\ndata: "
        + status_block("typing")
        .split(b"data: ")[1]
        .replace(b'"id": "Rn4kQ2xVb8", ', b""),  # a status without id
        b"event: chunk\ndata: not json\n\n",
        b'event: chunk\ndata: {"patches": [{"op": "remove", "path": "/0"}]}\n\n',
        b'event: status\nid: 1\ndata: {"data": {}}\n\n',
        b"event: chunk\ndata: [1]\n\n",
    ],
    ids=["unknown name", "status without id", "bad json", "bad op", "no status", "not object"],
)
def test_invalid_blocks_are_terminal_errors(block: bytes) -> None:
    _, states = track(chunk_block("x"), block)  # a chunk sets no event id
    assert states[-1].status is Status.ERROR
    assert states[-1].native_status == "invalid_event"
    assert states[-1].error is not None
    assert "\n" not in str(states[-1].error)


def test_abort_and_transport_failure() -> None:
    tracker, _ = track(status_block("typing"))
    aborted = tracker.aborted(NOW)
    assert (aborted.status, str(aborted.error)) == (Status.CANCELED, "aborted: client aborted")
    other, _ = track(status_block("typing"))
    assert other.failed(NOW, "HTTP 502").status is Status.ERROR


def test_patch_styles_build_the_text() -> None:
    tracker, _ = track(
        chunk_block("a", path="/content/-"),
        chunk_block("b", path="/content/-"),
        chunk_block("c", path="/content/0"),
    )
    assert tracker.text == "cab"
    nested, _ = track(chunk_block("x"), chunk_block("y", path="/1"))
    assert nested.text == "xy"


@given(st.lists(st.text(max_size=5), max_size=8), st.integers(1, 5))
def test_chunked_feeding_gives_the_same_text(words: list[str], size: int) -> None:
    stream = b"".join(chunk_block(w) for w in words)
    whole, _ = track(stream)
    parts = RunTracker(fx, SID, NOW)
    for start in range(0, len(stream), size):
        parts.feed(stream[start : start + size], NOW)
    assert parts.text == whole.text == "".join(words)


# -- stored events -----------------------------------------------------------------------------


def events_reply(events: list[dict[str, Any]], request: Request | None = None) -> Response:
    request = request or fx.final_message_request(f"{SID}/{CID}")
    body = json.dumps({"data": events}).encode()
    return Response(200, {"Content-Type": "application/json"}, body, request)


def stored(offset: int, type_: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"E{offset:09d}",
        "correlation_id": CID,
        "type": type_,
        "source": source,
        "offset": offset,
        "data": data,
        "deleted": False,
        "created_at": "2025-07-01T09:00:00+00:00",
    }


USER = stored(
    0, "message", "user", {"type": "message", "parts": [{"type": "content", "content": "hi"}]}
)
REPLY = stored(
    4,
    "message",
    "ai_agent",
    {"type": "message", "parts": [{"type": "content", "content": "Hello"},
                                   {"type": "reasoning", "reasoning": "hmm"},
                                   {"type": "content", "content": " there"}]},
)  # fmt: skip


def test_confirm_puts_the_final_message_on_raw() -> None:
    tracker, _ = track(status_block("typing"), chunk_block("Hel"))
    tracker.closed(NOW)
    state = tracker.confirm(events_reply([REPLY, USER]), NOW)
    assert state.status is Status.COMPLETE
    assert state.raw["text"] == "Hello there"
    assert state.raw["message"]["id"] == REPLY["id"]
    assert state.outputs == ()


def test_confirm_without_a_message_is_an_error() -> None:
    tracker, _ = track(status_block("typing"))
    tracker.closed(NOW)
    state = tracker.confirm(events_reply([USER]), NOW)
    assert state.status is Status.ERROR
    assert state.error is not None
    assert state.error.code == "no_message"


def test_message_text() -> None:
    assert message_text(REPLY["data"]) == "Hello there"
    assert message_text({"type": "message"}) == ""


@pytest.mark.parametrize(
    ("events", "status", "native"),
    [
        ([USER], Status.QUEUED, "open"),
        ([USER, stored(1, "status", "ai_agent", {"type": "status", "status": "acknowledged"})],
         Status.QUEUED, "acknowledged"),
        ([USER, stored(1, "status", "ai_agent", {"type": "status", "status": "typing"})],
         Status.RENDERING, "typing"),
        ([USER, stored(1, "status", "ai_agent", {"type": "status", "status": "typing"}), REPLY],
         Status.COMPLETE, "message"),
        ([USER, stored(1, "status", "ai_agent", {"type": "status", "status": "error"})],
         Status.ERROR, "error"),
        ([USER, stored(1, "status", "ai_agent", {"type": "status", "status": "cancelled"})],
         Status.CANCELED, "cancelled"),
    ],
)  # fmt: skip
def test_parse_state_from_stored_events(
    events: list[dict[str, Any]], status: Status, native: str
) -> None:
    (request,) = fx.status_requests(f"{SID}/{CID}", None)
    assert "types" not in request.url
    state = fx.parse_state(events_reply(events, request), NOW, None)
    assert (state.status, state.native_status, state.job_id) == (status, native, f"{SID}/{CID}")
    if status is Status.COMPLETE:
        assert state.raw["text"] == "Hello there"


def test_parse_state_keeps_a_terminal_previous() -> None:
    (request,) = fx.status_requests(f"{SID}/{CID}", None)
    done = fx.parse_state(events_reply([REPLY], request), NOW, None)
    assert fx.parse_state(events_reply([USER], request), NOW, done) is done


@pytest.mark.parametrize("body", [b"[]", b'{"data": 1}', b'{"data": [1]}', b"nope"])
def test_bad_list_events_replies(body: bytes) -> None:
    request = fx.final_message_request(f"{SID}/{CID}")
    with pytest.raises(ProtocolError):
        fx.find_message(Response(200, {}, body, request))


def test_parse_submission_from_a_buffered_stream() -> None:
    request = fx.create_event_request(SID, "hi")
    body = status_block("acknowledged") + chunk_block("Hi")
    submission = fx.parse_submission(Response(200, {}, body, request), NOW)
    assert (submission.job_id, submission.kind) == (f"{SID}/{CID}", "message")
    with pytest.raises(ProtocolError, match="correlation id"):
        fx.parse_submission(Response(200, {}, b"", request), NOW)
