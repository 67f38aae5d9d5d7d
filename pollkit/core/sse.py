"""An incremental ``text/event-stream`` parser: bytes in, `ServerSentEvent` objects out.

It follows the WHATWG "server-sent events" parsing rules (the rules flux0-style servers rely
on, docs/apis/flux0.md#parsing-rules), does no I/O, so any transport can feed it whatever chunks the
network hands over:

* lines end in CRLF, LF or CR; a CRLF split across two chunks counts once;
* a UTF-8 byte order mark at the very start of the stream is dropped (one, once);
* a line starting with ``:`` is a comment; a line without a colon is a field with an empty value;
  one space after the colon is stripped, no more;
* ``data`` lines are joined with ``\\n``; ``event`` names the event (``message`` by default);
  ``id`` sets the last event id, which later events keep until another ``id`` changes it (an id
  containing NUL is ignored); ``retry`` is taken only when it is all ASCII digits; other fields
  are ignored;
* a blank line dispatches the event, unless no ``data`` line came since the last one.

At the end of the stream (`SSEDecoder.close`) a block not ended by a blank line is dropped, as
the standard says; flux0's own SDK parses it instead, which `close(dispatch_incomplete=True)`
reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent", "reconnect_headers"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        event: The event name (``message`` when the block named none).
        data: The ``data`` lines of the block, joined with ``\\n``.
        id: The last event id when the event was dispatched (``""`` if none was ever set).
        retry: The reconnection delay in milliseconds set by this block, or None.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns the bytes of one event stream, in chunks of any size, into events.

    Attributes:
        last_event_id: The id of the last block the stream completed (``""`` until a block
            with an ``id`` field ends; a block without one keeps the id before it); send it
            back on reconnection (`reconnect_headers`). A block cut off by a drop never
            counts, so resuming from this id loses nothing.
        retry: The last valid ``retry`` value in milliseconds, or None.

    Args:
        last_event_id: Where a stream resumed with `reconnect_headers` starts from.
        retry: The reconnection delay the stream before it set.
    """

    def __init__(self, last_event_id: str = "", retry: int | None = None) -> None:
        self.last_event_id = last_event_id
        self._id_buffer = last_event_id  # committed to last_event_id when its block ends
        self.retry = retry
        self._buffer = bytearray()
        self._started = False  # whether the BOM check at the start of the stream is done
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._closed = False
        self._event = ""
        self._data: list[str] = []
        self._block_retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse the next bytes of the stream.

        Args:
            chunk: Any number of bytes (empty is fine).

        Returns:
            The events completed by these bytes, in order.

        Raises:
            ValueError: The decoder was closed.
        """
        if self._closed:
            raise ValueError("the SSE decoder is closed")
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []  # could still be a BOM: wait for more bytes
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
            self._started = True
        events: list[ServerSentEvent] = []
        for line in self._lines():
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self, *, dispatch_incomplete: bool = False) -> list[ServerSentEvent]:
        """End the stream.

        Args:
            dispatch_incomplete: Dispatch a last block that no blank line ended (flux0's SDK
                does); by default it is dropped, as the standard says.

        Returns:
            The last event when `dispatch_incomplete` is set and there was one, else nothing.
        """
        if self._closed:
            return []
        self._closed = True
        tail = bytes(self._buffer)
        self._buffer.clear()
        if not dispatch_incomplete:
            return []
        if not self._started and tail.startswith(_BOM):
            tail = tail[len(_BOM) :]
        events: list[ServerSentEvent] = []
        for line in (tail, b"") if tail else (b"",):
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _lines(self) -> list[bytes]:
        """Complete lines in the buffer (without terminators); the rest stays buffered."""
        buffer = self._buffer
        if self._skip_lf and buffer[:1] == b"\n":
            del buffer[:1]
        if buffer:
            self._skip_lf = False
        lines: list[bytes] = []
        start = 0
        size = len(buffer)
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                lines.append(bytes(buffer[start:lf]))
                start = lf + 1
                continue
            lines.append(bytes(buffer[start:cr]))
            if cr + 1 < size:
                start = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:
                start = cr + 1
                self._skip_lf = True  # the LF of a CRLF may come in the next chunk
        del buffer[:start]
        return lines

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        """Process one line; return the event a blank line dispatches."""
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = self._block_retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        event = None
        if self._data:
            event = ServerSentEvent(
                event=self._event or "message",
                data="\n".join(self._data),
                id=self.last_event_id,
                retry=self._block_retry,
            )
        self._event = ""
        self._data = []
        self._block_retry = None
        return event


def reconnect_headers(last_event_id: str = "") -> dict[str, str]:
    """Request headers for opening (or re-opening) an event stream.

    Args:
        last_event_id: `SSEDecoder.last_event_id` of the stream being resumed; ``""`` for a
            first connection (no ``Last-Event-ID`` header is sent then).

    Returns:
        ``Accept`` and ``Cache-Control``, plus ``Last-Event-ID`` when an id is given.

    Raises:
        ValueError: The id holds a character a header cannot carry (CR, LF or NUL).
    """
    if any(ch in last_event_id for ch in "\r\n\x00"):
        raise ValueError("an event id cannot contain CR, LF or NUL")
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers
