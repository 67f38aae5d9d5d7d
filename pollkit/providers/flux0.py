"""flux0-style agent sessions (docs/apis/flux0.md): a run is one server-sent-event stream.

A user message posted to a session (``create_event``) is answered by a ``text/event-stream`` of
``status`` blocks and JSON-Patch ``chunk`` blocks; the stream ends only when the server closes
it, and the final message is then read back with ``list_events``. A pollkit job id for a run is
``<session id>/<correlation id>``.

Two ways to follow a run, both sans-I/O here:

* push: `RunTracker` is fed the stream's bytes and turns them into `JobState`s (docs/apis/flux0.md)
  (`pollkit.client._flux0.stream_run` drives it over a real connection);
* poll: `Flux0.status_requests` / `Flux0.parse_state` read the run's stored events, so the
  engine's usual waiting works too (without the chunks).

`pollkit.models.Output` cannot carry inline content, so a run has no outputs: the final message
is on the state's `raw` mapping instead, as ``raw["text"]`` (the message's text) and
``raw["message"]`` (the stored event).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from pollkit.core import jsonbody
from pollkit.core.sse import ServerSentEvent, SSEDecoder, reconnect_headers
from pollkit.errors import ConfigurationError, ProtocolError
from pollkit.models import ErrorInfo, JobState, Status
from pollkit.providers.base import Provider, Request, Response, Submission, setting

__all__ = ["DEFAULT_BASE_URL", "STATUSES", "Flux0", "RunTracker", "message_text"]

_log = logging.getLogger("pollkit.providers.flux0")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"

#: docs/apis/flux0.md#status-map. Anything else follows rule 1: non-terminal, logged once.
STATUSES: dict[str, Status] = {
    "acknowledged": Status.QUEUED,
    "processing": Status.RENDERING,
    "typing": Status.RENDERING,
    "ready": Status.COMPLETE,
    "completed": Status.COMPLETE,
    "error": Status.ERROR,
    "cancelled": Status.CANCELED,
}
_KIND = "message"


def _split(job_id: str) -> tuple[str, str]:
    session_id, slash, correlation_id = job_id.partition("/")
    if not slash or not session_id or not correlation_id:
        raise ConfigurationError(f"flux0 job ids are '<session id>/<correlation id>': {job_id!r}")
    return session_id, correlation_id


def message_text(data: Mapping[str, Any]) -> str:
    """The text of a stored message's ``data``: its ``content`` parts, joined.

    Args:
        data: A message event's ``data`` (``{"type": "message", "parts": [...]}``).

    Returns:
        The concatenated ``content`` of its content parts (``""`` when there are none).
    """
    parts = data.get("parts")
    return "".join(
        str(part.get("content", ""))
        for part in (parts if isinstance(parts, list) else ())
        if isinstance(part, Mapping) and part.get("type") == "content"
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _apply_patch(document: Any, patch: Mapping[str, Any]) -> Any:
    """`document` with one JSON-Patch ``add``/``replace`` applied; containers are created on
    the way, since runners start from an empty document whatever their path style."""
    op, path, value = patch.get("op"), patch.get("path"), patch.get("value")
    if op not in ("add", "replace") or not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"unsupported patch {op!r} at {path!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]

    def put(node: Any, rest: list[str]) -> Any:
        token = rest[0]
        if node is None:
            node = [] if token == "-" or token.isdigit() else {}
        if isinstance(node, list):
            index = len(node) if token == "-" else int(token) if token.isdigit() else -1
            if not 0 <= index <= len(node):
                raise ValueError(f"patch path {path!r} does not fit the document")
            if len(rest) > 1:
                child = put(node[index] if index < len(node) else None, rest[1:])
                node[index : index + 1] = [child]
            elif op == "add":
                node.insert(index, value)
            else:
                node[index : index + 1] = [value]
            return node
        if isinstance(node, dict):
            node[token] = put(node.get(token), rest[1:]) if len(rest) > 1 else value
            return node
        raise ValueError(f"patch path {path!r} does not fit the document")

    return put(document, tokens)


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)


class RunTracker:
    """Follows one run's event stream and says its pollkit status (docs/apis/flux0.md#status-map).

    Feed it the stream's bytes as they arrive; it never does I/O. Terminal states are sticky.
    An unknown event name, a block that is not JSON or not the chunk/status shape, or a status
    with no id (neither its JSON ``id`` nor an SSE id, which the standard keeps from earlier
    blocks) makes the run an `error`, as flux0's SDK fails loudly on them.

    Args:
        provider: The provider (for its name and the once-per-value unknown-status log).
        session_id: The session the run was posted to.
        observed_at: When the POST was accepted (the first state is `queued`).
    """

    def __init__(self, provider: Flux0, session_id: str, observed_at: datetime) -> None:
        self.provider = provider
        self.session_id = session_id
        self.correlation_id = ""
        self.document: Any = None
        self._decoder = SSEDecoder()
        self._native = "open"
        self.state = self._state(Status.QUEUED, observed_at)

    @property
    def job_id(self) -> str:
        """``<session id>/<correlation id>`` (the correlation id is empty until an event)."""
        return f"{self.session_id}/{self.correlation_id}"

    @property
    def text(self) -> str:
        """The reply as the chunks so far built it."""
        return "".join(_strings(self.document))

    def _state(
        self, status: Status, observed_at: datetime, error: ErrorInfo | None = None, **raw: Any
    ) -> JobState:
        return JobState(
            provider=self.provider.name,
            job_id=self.job_id,
            status=status,
            native_status=self._native,
            observed_at=observed_at,
            error=error,
            kind=_KIND,
            raw={"correlation_id": self.correlation_id, "text": self.text, **raw},
        )

    def _move(
        self, status: Status, observed_at: datetime, error: ErrorInfo | None = None, **raw: Any
    ) -> JobState | None:
        if self.state.is_terminal:
            return None
        before = self.state
        self.state = self._state(status, observed_at, error, **raw)
        changed = (before.status, before.native_status) != (status, self._native)
        return self.state if changed or status is Status.RENDERING else None

    def feed(self, chunk: bytes, observed_at: datetime) -> list[JobState]:
        """Take the next bytes of the stream.

        Args:
            chunk: Bytes as they came off the connection.
            observed_at: When they arrived.

        Returns:
            The new states, in order (a chunk gives a `rendering` state with the longer text).
        """
        states = []
        for event in self._decoder.feed(chunk):
            state = self._event(event, observed_at)
            if state is not None:
                states.append(state)
        return states

    def _event(self, event: ServerSentEvent, observed_at: datetime) -> JobState | None:
        if self.state.is_terminal:
            return None
        try:
            payload = jsonbody.loads(event.data)
            if not isinstance(payload, dict):
                raise ValueError("the data is not a JSON object")
            if event.event == "chunk":
                return self._chunk(payload, observed_at)
            if event.event == "status":
                if not event.id and "id" not in payload:
                    raise ValueError("a status block without an id")
                return self._status(payload, observed_at)
            raise ValueError(f"unknown event name {event.event[:40]!r}")
        # RecursionError: JSON or a patch path nested deeper than Python goes.
        except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            self._native = "invalid_event"
            reason = ErrorInfo("invalid_event", f"invalid {event.event[:40]!r} block: {exc}")
            return self._move(Status.ERROR, observed_at, reason)

    def _chunk(self, payload: Mapping[str, Any], observed_at: datetime) -> JobState | None:
        self.correlation_id = self.correlation_id or _text(payload.get("correlation_id"))
        for patch in payload["patches"]:
            self.document = _apply_patch(self.document, patch)
        self._native = "chunk"
        return self._move(Status.RENDERING, observed_at)

    def _status(self, payload: Mapping[str, Any], observed_at: datetime) -> JobState | None:
        self.correlation_id = self.correlation_id or _text(payload.get("correlation_id"))
        data = payload["data"]
        native = data["status"]
        if not isinstance(native, str):
            raise ValueError("the status is not a string")
        self._native = native
        status = STATUSES.get(native)
        if status is None:
            self.provider.log_unknown_status(native, self.job_id)
            status = self.state.status  # rule 1: keep the last known non-terminal status
        error = None
        if status is Status.ERROR:
            error = ErrorInfo("error", json.dumps(data.get("data"))[:500])
        return self._move(status, observed_at, error)

    def closed(self, observed_at: datetime) -> JobState:
        """The server closed the stream: `complete` unless it said error or cancelled.

        Call `confirm` with the run's stored events afterwards to read the final message.
        """
        for event in self._decoder.close():
            self._event(event, observed_at)
        if not self.state.is_terminal:
            self._native = "stream_closed"
            self._move(Status.COMPLETE, observed_at)
        return self.state

    def aborted(self, observed_at: datetime, reason: str = "client aborted") -> JobState:
        """The client gave up (a timeout or an abort): `canceled` with `reason`."""
        self._native = "client_aborted"
        self._move(Status.CANCELED, observed_at, ErrorInfo("aborted", reason))
        return self.state

    def failed(self, observed_at: datetime, reason: str) -> JobState:
        """The transport failed (an HTTP error, a dropped connection): `error` with `reason`."""
        self._native = "transport_error"
        self._move(Status.ERROR, observed_at, ErrorInfo("transport", reason))
        return self.state

    def confirm(self, response: Response, observed_at: datetime) -> JobState:
        """Put the final message from a `Flux0.final_message_request` reply on the state.

        A `complete` run whose message cannot be found becomes an `error`.

        Raises:
            ProtocolError: The reply does not have the ``{"data": [Event]}`` shape.
        """
        message = self.provider.find_message(response)
        if self.state.status is Status.COMPLETE and message is None:
            self.state = replace(
                self.state,
                status=Status.ERROR,
                error=ErrorInfo("no_message", "the stream ended without a final message"),
            )
        elif message is not None and self.state.status is Status.COMPLETE:
            raw = {**self.state.raw, "text": message_text(message["data"]), "message": message}
            self.state = replace(self.state, observed_at=observed_at, raw=raw)
        return self.state


class Flux0(Provider):
    """A flux0-style agent server.

    Args:
        base_url: Where the API lives (its routes are under ``/api``); default:
            ``$FLUX0_BASE_URL``, else ``http://127.0.0.1:8080``.
        user: The user to act as (the ``flux0_user_sub`` cookie); None: the server's default,
            ``anonymous``.
    """

    name = "flux0"
    #: The environment variable read for a base URL that was not passed.
    ENV_BASE_URL = "FLUX0_BASE_URL"

    def __init__(self, *, base_url: str | None = None, user: str | None = None) -> None:
        super().__init__()
        self.base_url = setting(base_url, self.ENV_BASE_URL, DEFAULT_BASE_URL).rstrip("/")
        self.user = user

    @property
    def secrets(self) -> Sequence[str]:
        """None: flux0 has no credentials."""
        return ()

    def _request(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        job_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        url = f"{self.base_url}/api{path}" + (f"?{urlencode(query)}" if query else "")
        sent = dict(headers or {})
        if self.user is not None:
            sent["Cookie"] = f"flux0_user_sub={quote(self.user, safe='')}"
        return Request(method, url, operation, job_id=job_id, json_body=body, headers=sent)

    # -- agents and sessions ---------------------------------------------------------------

    def list_agents_request(self) -> Request:
        """``GET /api/agents``."""
        return self._request("GET", "/agents", "list agents")

    def create_agent_request(
        self, name: str, type_: str, description: str | None = None
    ) -> Request:
        """``POST /api/agents`` (201 with the agent).

        Raises:
            ConfigurationError: `name` or `type_` is not 1–100 characters.
        """
        for label, value in (("name", name), ("type", type_)):
            if not 1 <= len(value) <= 100:
                raise ConfigurationError(f"agent {label} must be 1-100 characters")
        body: dict[str, Any] = {"name": name, "type": type_}
        if description is not None:
            body["description"] = description
        return self._request("POST", "/agents", "create agent", body=body)

    def agent_request(self, agent_id: str) -> Request:
        """``GET /api/agents/{agent_id}`` (404 for an unknown id)."""
        return self._request("GET", f"/agents/{quote(agent_id, safe='')}", "get agent")

    def create_session_request(
        self,
        agent_id: str,
        *,
        session_id: str | None = None,
        title: str | None = None,
        allow_greeting: bool = False,
    ) -> Request:
        """``POST /api/sessions`` (201 with the session; 400 for an unknown agent)."""
        body: dict[str, Any] = {"agent_id": agent_id}
        if session_id is not None:
            body["id"] = session_id
        if title is not None:
            body["title"] = title
        query = [("allow_greeting", "true")] if allow_greeting else []
        return self._request("POST", "/sessions", "create session", query=query, body=body)

    def session_request(self, session_id: str) -> Request:
        """``GET /api/sessions/{session_id}`` (404 for an unknown id)."""
        return self._request("GET", f"/sessions/{quote(session_id, safe='')}", "get session")

    def list_sessions_request(self, agent_id: str | None = None) -> Request:
        """``GET /api/sessions[?agent_id=]``."""
        query = [("agent_id", agent_id)] if agent_id is not None else []
        return self._request("GET", "/sessions", "list sessions", query=query)

    # -- runs ------------------------------------------------------------------------------

    def create_event_request(self, session_id: str, content: str) -> Request:
        """``POST /api/sessions/{session_id}/events/stream``: start a run; the reply is an
        event stream (feed it to a `RunTracker`).

        Raises:
            ConfigurationError: `content` is empty.
        """
        if not isinstance(content, str) or not content:
            raise ConfigurationError("a flux0 message needs non-empty content")
        body = {"type": "message", "source": "user", "content": content}
        path = f"/sessions/{quote(session_id, safe='')}/events/stream"
        return self._request(
            "POST", path, "create event", body=body, job_id=session_id, headers=reconnect_headers()
        )

    def list_events_request(
        self,
        session_id: str,
        *,
        correlation_id: str | None = None,
        types: Sequence[str] = (),
        min_offset: int | None = None,
        source: str | None = None,
    ) -> Request:
        """``GET /api/sessions/{session_id}/events`` with its filters (repeated ``types``)."""
        query: list[tuple[str, str]] = []
        if min_offset is not None:
            query.append(("min_offset", str(min_offset)))
        if source is not None:
            query.append(("source", source))
        if correlation_id is not None:
            query.append(("correlation_id", correlation_id))
        query.extend(("types", kind) for kind in types)
        path = f"/sessions/{quote(session_id, safe='')}/events"
        job_id = f"{session_id}/{correlation_id}" if correlation_id else session_id
        return self._request("GET", path, "list events", query=query, job_id=job_id)

    def final_message_request(self, job_id: str) -> Request:
        """The ``list_events`` request that reads a run's final message (docs/apis/flux0.md).

        Raises:
            ConfigurationError: `job_id` is not ``<session id>/<correlation id>``.
        """
        session_id, correlation_id = _split(job_id)
        return self.list_events_request(
            session_id, correlation_id=correlation_id, types=("message",)
        )

    def events(self, response: Response) -> list[Mapping[str, Any]]:
        """The events of a ``list_events`` reply, in offset order.

        Raises:
            ProtocolError: The reply is not ``{"data": [Event]}``.
        """
        body = response.json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(
            isinstance(e, dict) and type(e.get("offset", 0)) is int for e in data
        ):
            raise ProtocolError(
                "list_events reply is not {'data': [Event]}",
                operation=response.request.operation,
                job_id=response.request.job_id,
            )
        return sorted(data, key=lambda event: event.get("offset", 0))

    def find_message(self, response: Response) -> Mapping[str, Any] | None:
        """The agent's last message in a ``list_events`` reply, or None.

        Raises:
            ProtocolError: The reply is not ``{"data": [Event]}``.
        """
        found = [
            e
            for e in self.events(response)
            if e.get("type") == "message"
            and e.get("source") == "ai_agent"
            and isinstance(e.get("data"), Mapping)
        ]
        return found[-1] if found else None

    # -- the Provider contract (polling the stored events) ----------------------------------

    def submit_request(self, spec: Mapping[str, Any]) -> Request:
        """The run for ``{"session_id": ..., "content": ...}``.

        Raises:
            ConfigurationError: The spec is not a mapping, or lacks a session id or content.
        """
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"flux0 spec must be a mapping, got {type(spec).__name__}")
        session_id, content = spec.get("session_id"), spec.get("content")
        if not isinstance(session_id, str) or not session_id:
            raise ConfigurationError("a flux0 spec needs a 'session_id' (a non-empty string)")
        if not isinstance(content, str) or not content:
            # Not str(): a list or a number would be posted as its Python repr.
            raise ConfigurationError("a flux0 spec needs a 'content' (a non-empty string)")
        return self.create_event_request(session_id, content)

    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        """The run in a fully read stream reply (its first event names the correlation id).

        Raises:
            ProtocolError: No event carries a correlation id.
        """
        session_id = response.request.job_id or ""
        tracker = RunTracker(self, session_id, observed_at)
        tracker.feed(response.body, observed_at)
        tracker.closed(observed_at)
        if not tracker.correlation_id:
            raise ProtocolError(
                "the event stream named no correlation id",
                operation=response.request.operation,
                job_id=session_id,
            )
        return Submission(tracker.job_id, _KIND, observed_at, raw={"text": tracker.text})

    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """The run's stored events (all types)."""
        session_id, correlation_id = _split(job_id)
        return [self.list_events_request(session_id, correlation_id=correlation_id)]

    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """The run's state from its stored events: the agent's message means `complete`;
        otherwise the last agent status decides (docs/apis/flux0.md#status-map).

        Raises:
            ProtocolError: The reply is not ``{"data": [Event]}``.
        """
        job_id = response.request.job_id or ""
        status, native, error, raw = Status.QUEUED, "open", None, {}
        for event in self.events(response):
            if event.get("source") != "ai_agent":
                continue
            data = event.get("data") or {}
            if event.get("type") == "message" and isinstance(data, Mapping):
                status, native = Status.COMPLETE, "message"
                raw = {"text": message_text(data), "message": event}
            elif event.get("type") == "status" and isinstance(data, Mapping):
                native = str(data.get("status"))
                mapped = STATUSES.get(native)
                if mapped is None:
                    self.log_unknown_status(native, job_id)
                elif not status.is_terminal:
                    status = mapped
                    if mapped is Status.ERROR:
                        error = ErrorInfo("error", json.dumps(data.get("data"))[:500])
        if previous is not None and previous.is_terminal:
            return previous
        return JobState(
            provider=self.name,
            job_id=job_id,
            status=status,
            native_status=native,
            observed_at=observed_at,
            error=error,
            kind=_KIND,
            raw=raw,
        )
