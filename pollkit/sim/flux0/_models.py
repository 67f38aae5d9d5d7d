"""What the flux0 dialect validates and how it shapes its replies, as the real server does.

The real server is FastAPI over pydantic v2, so its 422 bodies are pydantic's own errors
(``type``, ``loc``, ``msg``, ``input``, ``ctx``) with FastAPI's location prefix. The simulator
validates with pydantic models of the same constraints, so the words and the shape are
pydantic's, not a copy of them. `docs/simulator-fidelity.md` lists each behaviour and the
upstream file it comes from.
"""

from __future__ import annotations

import enum
import json
import random
import string
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pollkit.sim.pixy._items import validation_detail

__all__ = [
    "ID_LENGTH",
    "USER_NAME",
    "AgentBody",
    "EventBody",
    "EventSource",
    "EventType",
    "SessionBody",
    "detail",
    "event_view",
    "new_id",
    "parse_body",
    "problems_in_order",
    "session_view",
    "validate_params",
]

ID_LENGTH = 10
#: The display name the server's no-op authentication gives every user it creates.
USER_NAME = "Anonymous"

_ENDS = string.ascii_letters + string.digits
# nanoid's alphabet is letters, digits, "-" and "_"; the server redraws any id with "_" or
# with "-" first or last, so "-" can appear only inside an id.
_INSIDE = _ENDS + "-"

_ID = Annotated[str, Field(min_length=ID_LENGTH, max_length=ID_LENGTH)]
_NAME = Annotated[str, Field(min_length=1, max_length=100)]
_FORBID = ConfigDict(extra="forbid")
_Body = TypeVar("_Body", bound=BaseModel)


def new_id(rng: random.Random, taken: Callable[[str], bool]) -> str:
    """A 10-character id drawn as the server draws them (its rejection rule included)."""
    while True:
        inner = "".join(rng.choice(_INSIDE) for _ in range(ID_LENGTH - 2))
        new = rng.choice(_ENDS) + inner + rng.choice(_ENDS)
        if not taken(new):
            return new


class AgentBody(BaseModel):
    """The body of ``POST /api/agents``."""

    model_config = _FORBID
    name: _NAME
    type: _NAME
    description: str | None = None


class SessionBody(BaseModel):
    """The body of ``POST /api/sessions``."""

    model_config = _FORBID
    agent_id: _ID
    id: _ID | None = None
    title: Annotated[str, Field(max_length=200)] | None = None


class EventType(enum.Enum):
    """The event types the server accepts in a body or a ``types`` filter."""

    MESSAGE = "message"
    TOOL = "tool"
    STATUS = "status"
    CUSTOM = "custom"


class EventSource(enum.Enum):
    """The event sources the server accepts in a body or a ``source`` filter."""

    USER = "user"
    AI_AGENT = "ai_agent"
    SYSTEM = "system"


class EventBody(BaseModel):
    """The body of ``POST /api/sessions/{id}/events/stream``."""

    model_config = _FORBID
    type: EventType
    source: EventSource
    content: str | None = None


_PARAMS: dict[str, TypeAdapter[Any]] = {
    "id": TypeAdapter(_ID),
    "int": TypeAdapter(int),
    "source": TypeAdapter(EventSource),
    "types": TypeAdapter(list[EventType]),
}


def detail(status: int, value: Any) -> web.Response:
    """FastAPI's error body: ``{"detail": value}``."""
    return web.json_response({"detail": value}, status=status)


def validate_params(
    checks: list[tuple[str, str, str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate path and query values as FastAPI does, one by one, errors kept in order.

    Args:
        checks: ``(where, name, kind, value)``: where is ``path`` or ``query``; kind is a key
            of the adapters (``id``, ``int``, ``source``, ``types``).

    Returns:
        The validated values by name, and FastAPI's detail entries for those that failed.
    """
    values: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for where, name, kind, value in checks:
        try:
            values[name] = _PARAMS[kind].validate_python(value)
        except ValidationError as exc:
            for entry in validation_detail(exc, where):
                entry["loc"].insert(1, name)
                problems.append(entry)
    return values, problems


async def parse_body(
    request: web.Request, model: type[_Body]
) -> tuple[_Body | None, list[dict[str, Any]]]:
    """The request's JSON body validated with `model`, or FastAPI's detail entries.

    The entries go after the path and query ones (`problems_in_order`).
    """
    raw = await request.read()
    if not raw:
        return None, [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    try:
        decoded = json.loads(raw)
    except json.JSONDecodeError as exc:
        entry = {
            "type": "json_invalid",
            "loc": ["body", exc.pos],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": exc.msg},
        }
        return None, [entry]
    try:
        # FastAPI validates bodies with from_attributes, which decides the error for a non-object.
        return model.model_validate(decoded, from_attributes=True), []
    except ValidationError as exc:
        return None, validation_detail(exc, "body")


def problems_in_order(
    params: list[dict[str, Any]], body: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """FastAPI's order: path and query entries, then the body's; but a body that is not JSON
    is reported alone, as FastAPI decodes it before it validates anything."""
    if body and body[0]["type"] == "json_invalid":
        return body
    return params + body


def session_view(record: Mapping[str, Any], *, drop_none: bool) -> dict[str, Any]:
    """A session as the server writes it: the create and retrieve routes leave out null
    fields, the list route writes them as null."""
    shown = {
        "id": record["id"],
        "agent_id": record["agent_id"],
        "user_id": record["user_id"],
        "title": record.get("title"),
        "consumption_offsets": dict(record["consumption_offsets"]),
        "created_at": record["created_at"],
    }
    return {k: v for k, v in shown.items() if v is not None} if drop_none else shown


_DATA_FIELDS = {
    "message": ("type", "tags", "flagged", "parts", "participant"),
    "status": ("type", "status", "acknowledged_offset", "data"),
}


def event_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """A stored event as ``GET /events`` writes it: through the server's response model, so
    in its field order and with the optional fields it lacks written as null."""
    data = event["data"]
    fields = _DATA_FIELDS.get(data.get("type"))
    shown_data = {name: data.get(name) for name in fields} if fields else dict(data)
    return {
        "id": event["id"],
        "correlation_id": event["correlation_id"],
        "type": event["type"],
        "source": event["source"],
        "offset": event["offset"],
        "data": shown_data,
        "deleted": event["deleted"],
        "metadata": event.get("metadata"),
        "created_at": event["created_at"],
    }
