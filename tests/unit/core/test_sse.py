"""The SSE parser: every parsing rule on a table of streams, and chunking that never matters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pollkit.core.sse import ServerSentEvent, SSEDecoder, reconnect_headers

E = ServerSentEvent

CASES: list[tuple[str, bytes, list[ServerSentEvent]]] = [
    ("one event", b"data: hi\n\n", [E(data="hi")]),
    ("event name", b"event: status\ndata: x\n\n", [E(event="status", data="x")]),
    ("default name after a named one", b"event: a\ndata: 1\n\ndata: 2\n\n",
     [E(event="a", data="1"), E(data="2")]),
    ("multi-line data joined with LF", b"data: a\ndata: b\ndata:\n\n", [E(data="a\nb\n")]),
    ("CRLF line ends", b"event: e\r\ndata: x\r\n\r\n", [E(event="e", data="x")]),
    ("CR line ends", b"event: e\rdata: x\r\r", [E(event="e", data="x")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [E(data="a\nb\nc")]),
    ("BOM at the start dropped", b"\xef\xbb\xbfdata: x\n\n", [E(data="x")]),
    ("second BOM is data", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    ("comment ignored", b": keep-alive\ndata: x\n: more\n\n", [E(data="x")]),
    ("comment alone dispatches nothing", b": ping\n\n", []),
    ("only one space stripped", b"data:  two\n\n", [E(data=" two")]),
    ("no space after colon", b"data:x\n\n", [E(data="x")]),
    ("colon in value kept", b"data: a: b\n\n", [E(data="a: b")]),
    ("field without colon is empty data", b"data\n\n", [E(data="")]),
    ("field without colon, event", b"event\ndata: x\n\n", [E(data="x")]),
    ("no data: not dispatched", b"event: status\nid: 7\n\n", []),
    ("id kept across events", b"id: 1\ndata: a\n\ndata: b\n\n",
     [E(data="a", id="1"), E(data="b", id="1")]),
    ("id set without data still sticks", b"id: 5\n\ndata: a\n\n", [E(data="a", id="5")]),
    ("empty id resets", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E(data="a", id="1"), E(data="b")]),
    ("id with NUL ignored", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
     [E(data="a", id="1"), E(data="b", id="1")]),
    ("retry digits", b"retry: 1500\ndata: a\n\n", [E(data="a", retry=1500)]),
    ("retry not digits ignored", b"retry: 1.5\ndata: a\n\nretry: -1\ndata: b\n\n",
     [E(data="a"), E(data="b")]),
    ("retry non-ASCII digits ignored", "retry: ١٢\ndata: a\n\n".encode(), [E(data="a")]),
    ("retry only in its block", b"retry: 9\ndata: a\n\ndata: b\n\n",
     [E(data="a", retry=9), E(data="b")]),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [E(data="a")]),
    ("field names case-sensitive", b"Data: a\nDATA: b\n\n", []),
    ("incomplete block dropped", b"data: a\n\ndata: b\n", [E(data="a")]),
    ("UTF-8 data", "data: héllo ✓\n\n".encode(), [E(data="héllo ✓")]),
    ("invalid UTF-8 replaced", b"data: \xff\n\n", [E(data="\ufffd")]),
    ("blank lines between", b"\n\n\ndata: a\n\n\n\n", [E(data="a")]),
    ("flux0 status and chunk",
     b'event: status\nid: Rn4\ndata: {"a": 1}\n\nevent: chunk\ndata: {"b": 2}\n\n',
     [E(event="status", data='{"a": 1}', id="Rn4"), E(event="chunk", data='{"b": 2}', id="Rn4")]),
]  # fmt: skip


def parse(stream: bytes, chunks: list[int] | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    if chunks is None:
        events += decoder.feed(stream)
    else:
        position = 0
        for cut in sorted(chunks):
            events += decoder.feed(stream[position:cut])
            position = cut
        events += decoder.feed(stream[position:])
    return events + decoder.close()


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert parse(stream) == expected


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_byte_by_byte(stream: bytes, expected: list[ServerSentEvent]) -> None:
    assert parse(stream, list(range(len(stream)))) == expected


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []  # the LF completes the CRLF: not a blank line
    assert decoder.feed(b"\r\n") == [E(data="a")]


def test_cr_then_cr_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E(data="a")]


def test_bom_split_across_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb") == []
    assert decoder.feed(b"\xbfdata: x\n\n") == [E(data="x")]


def test_close_can_dispatch_a_trailing_block_like_flux0() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: chunk\ndata: {}") == []
    assert decoder.close(dispatch_incomplete=True) == [E(event="chunk", data="{}")]
    assert decoder.close() == []


def test_close_without_a_pending_block_dispatches_nothing() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    assert decoder.close(dispatch_incomplete=True) == []


def test_feed_after_close_is_refused() -> None:
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(ValueError, match="closed"):
        decoder.feed(b"data: a\n\n")


def test_decoder_keeps_last_id_and_retry() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 3\nretry: 250\n\n")
    assert (decoder.last_event_id, decoder.retry) == ("3", 250)


def test_an_id_counts_only_once_its_block_ends() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b")  # the stream drops inside block 2
    assert decoder.last_event_id == "1"
    resumed = SSEDecoder(decoder.last_event_id, decoder.retry)
    assert resumed.feed(b"data: c\n\n") == [ServerSentEvent(data="c", id="1")]
    assert resumed.feed(b"id: 3\n\n") == []  # an id alone moves the resume point
    assert resumed.last_event_id == "3"


def test_reconnect_headers() -> None:
    assert reconnect_headers() == {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    assert reconnect_headers("Rn4")["Last-Event-ID"] == "Rn4"
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        reconnect_headers("a\nb")


_FIELD = st.sampled_from(["data", "event", "id", "retry", "other", ""])
_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8
)
_END = st.sampled_from(["\n", "\r", "\r\n"])
_LINE = st.one_of(
    st.tuples(_FIELD, st.sampled_from([":", ": ", ""]), _VALUE, _END).map("".join),
    st.tuples(st.just(":"), _VALUE, _END).map("".join),
    _END,
)
_STREAM = st.tuples(st.booleans(), st.lists(_LINE, max_size=30)).map(
    lambda bom_lines: (b"\xef\xbb\xbf" if bom_lines[0] else b"") + "".join(bom_lines[1]).encode()
)


@given(stream=_STREAM, data=st.data())
def test_any_chunking_gives_the_same_events(stream: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert parse(stream, cuts) == parse(stream)


@given(stream=st.binary(max_size=200), data=st.data())
def test_any_chunking_of_arbitrary_bytes_gives_the_same_events(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert parse(stream, cuts) == parse(stream)


@given(stream=_STREAM, data=st.data())
def test_any_chunking_gives_the_same_trailing_block(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    whole = SSEDecoder()
    expected = whole.feed(stream) + whole.close(dispatch_incomplete=True)
    split = SSEDecoder()
    got: list[ServerSentEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += split.feed(stream[start:end])
    assert got + split.close(dispatch_incomplete=True) == expected
    assert (split.last_event_id, split.retry) == (whole.last_event_id, whole.retry)
