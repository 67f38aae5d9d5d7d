"""Pixy: image, video and subtitle generation, polled by uid (docs/apis/pixy.md).

A spec names its type and carries the properties of that type::

    {"type": "image", "engine": "photon_flash", "delineation": "a red kite over the sea"}

or is built from a properties model: ``ImageGenProperties(...).as_spec()``. Specs are checked
with `ImageGenProperties`, `VideoGenProperties` or `SubtitleGenProperties` before anything is
sent, and the complete model is posted.

Hosts: the media API (``https://media.pixy.ir``) and the SSO host that checks the key
(``https://sso.pixy.ir``). Give another ``base_url`` (the simulator's ``sim.urls["pixy"]``) and
the key check goes there too, unless ``sso_url`` says otherwise.

What the replies carry beyond the status: ``task_progress`` becomes `JobState.progress` (None
while it is −1) and, from two rising readings, an `JobState.eta_seconds` the cadence wakes up
for; ``task_logs``, ``task_report``, image sizes (``results[].width``/``height``) and the rest
stay in `JobState.raw`, so every `Event` of a batch carries them.

List and update are not generic operations: `list_request`/`parse_page` and `update_requests`
describe them, and `pollkit.client._pixy.PixyClient` sends them.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from pollkit.core.naming import name_field
from pollkit.errors import ConfigurationError, ProtocolError
from pollkit.models import ErrorInfo, JobState, Status
from pollkit.providers.base import (
    Notification,
    Provider,
    Request,
    Response,
    Submission,
    setting,
)
from pollkit.providers.pixy_items import BY_STATUS, BY_TASK_STATUS, outputs_of, progress_of
from pollkit.providers.pixy_properties import (
    ImageGenProperties,
    PixyProperties,
    SubtitleGenProperties,
    VideoGenProperties,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SSO_URL",
    "KINDS",
    "ImageGenProperties",
    "Pixy",
    "PixyPage",
    "PixyProperties",
    "SubtitleGenProperties",
    "VideoGenProperties",
]

_log = logging.getLogger("pollkit.providers.pixy")

DEFAULT_BASE_URL = "https://media.pixy.ir"
DEFAULT_SSO_URL = "https://sso.pixy.ir"
#: Each job type's collection, under the media host.
COLLECTIONS: dict[str, str] = {
    "image": "/v1/apps/imagine/imagination/",
    "video": "/v1/apps/videogen/videos/",
    "subtitle": "/v1/apps/subtitle/subtitles/",
}
KINDS: tuple[str, ...] = tuple(COLLECTIONS)
_MODELS: dict[str, type[PixyProperties]] = {
    "image": ImageGenProperties,
    "video": VideoGenProperties,
    "subtitle": SubtitleGenProperties,
}
#: The most items one list request may ask for.
MAX_LIMIT = 100
# A webhook's `task_type` (the server's model class) → the job type.
_KIND_OF_TASK_TYPE = {"Imagination": "image", "Video": "video", "Subtitle": "subtitle"}


class _KeyBody(dict[str, str]):
    """The verify call's body: the key, kept out of reprs (`Request` shows its body)."""

    def __repr__(self) -> str:
        return "{'api_key': '[redacted]'}"


@dataclass(frozen=True, slots=True)
class PixyPage:
    """One page of a list reply.

    Attributes:
        kind: The job type listed.
        items: The jobs on the page, newest first.
        total: How many jobs match the filters (all pages).
        offset: Where the page starts.
        limit: The most items the page could hold.
    """

    kind: str
    items: tuple[JobState, ...]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None when this one is the last."""
        following = self.offset + self.limit
        return following if following < self.total else None


def _naive_utc(text: Any) -> datetime | None:
    """A reply's timestamp as a naive UTC datetime (None when it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):  # not a time, or one off the calendar in UTC
        return None
    return moment


def _is_uid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _query_time(moment: datetime | str | None) -> str | None:
    if moment is None or isinstance(moment, str):
        return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


class Pixy(Provider):
    """The Pixy media API (images, videos, subtitles).

    Args:
        api_key: The key, sent as ``x-api-key`` and checked once by the SSO verify call;
            default: ``$PIXY_API_KEY``.
        base_url: The media host (the simulator's ``sim.urls["pixy"]`` in tests); default:
            ``$PIXY_BASE_URL``, else ``https://media.pixy.ir``.
        sso_url: The host of ``/api_key/verify``; default: ``$PIXY_SSO_URL``, else
            ``https://sso.pixy.ir`` with the real media host, else `base_url` itself (the
            simulator serves both).

    Raises:
        ConfigurationError: The key is empty or a URL is not http(s).
    """

    name = "pixy"
    batch_status_limit = MAX_LIMIT

    #: The environment variables read for settings that were not passed.
    ENV_API_KEY = "PIXY_API_KEY"
    ENV_BASE_URL = "PIXY_BASE_URL"
    ENV_SSO_URL = "PIXY_SSO_URL"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        sso_url: str | None = None,
    ) -> None:
        super().__init__()
        api_key = setting(api_key, self.ENV_API_KEY)
        base_url = setting(base_url, self.ENV_BASE_URL, DEFAULT_BASE_URL)
        sso_url = setting(sso_url, self.ENV_SSO_URL) or None
        if not api_key or not api_key.strip():
            raise ConfigurationError(f"pixy: no API key (pass api_key= or set {self.ENV_API_KEY})")
        if sso_url is None:
            same = base_url.rstrip("/") == DEFAULT_BASE_URL
            sso_url = DEFAULT_SSO_URL if same else base_url
        for label, url in (("base_url", base_url), ("sso_url", sso_url)):
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
                raise ConfigurationError(f"pixy: {label} must be an http(s) URL, got {url!r}")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.sso_url = sso_url.rstrip("/")
        # uid → (type, created_at) of unfinished jobs, to aim list requests at them.
        self._tracked: dict[str, tuple[str, datetime]] = {}

    @property
    def secrets(self) -> Sequence[str]:
        """The API key."""
        return (self._api_key,)

    def _request(
        self, method: str, kind: str, operation: str, uid: str = "", **kwargs: Any
    ) -> Request:
        headers = {
            "x-api-key": self._api_key,
            "accept": "application/json",
            "Content-Type": "application/json",
        }
        url = f"{self.base_url}{COLLECTIONS[kind]}{uid}"
        return Request(method, url, operation, job_id=uid or None, headers=headers, **kwargs)

    @staticmethod
    def _kinds(kind: str | None) -> tuple[str, ...]:
        if kind is None:
            return KINDS
        if kind not in COLLECTIONS:
            raise ConfigurationError(f"pixy: type must be one of {', '.join(KINDS)}, not {kind!r}")
        return (kind,)

    @staticmethod
    def _uid(job_id: str) -> str:
        try:
            return str(uuid.UUID(job_id))
        except (ValueError, TypeError, AttributeError):
            raise ConfigurationError(f"pixy: {job_id!r} is not a uid (a UUID)") from None

    @staticmethod
    def kind_of_url(url: str) -> str | None:
        """The job type whose collection `url` is in (None: none of them)."""
        path = urlsplit(url).path
        for kind, collection in COLLECTIONS.items():
            if collection in path:
                return kind
        return None

    # -- the generic operations -------------------------------------------------------------

    def startup_request(self) -> Request:
        """``POST {sso}/api_key/verify`` with the key in the body and no ``x-api-key``."""
        headers = {"accept": "application/json", "Content-Type": "application/json"}
        return Request(
            "POST",
            f"{self.sso_url}/api_key/verify",
            "verify API key",
            json_body=_KeyBody(api_key=self._api_key),
            headers=headers,
        )

    def properties(self, spec: Mapping[str, Any] | PixyProperties) -> PixyProperties:
        """The checked properties of `spec` (a ``{"type": …}`` mapping or a model).

        Raises:
            ConfigurationError: Naming the first bad field.
        """
        if isinstance(spec, PixyProperties):
            return spec
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"pixy spec must be a mapping, got {type(spec).__name__}")
        kind = spec.get("type")
        if kind not in _MODELS:
            raise ConfigurationError(f"pixy spec: 'type' must be one of {', '.join(KINDS)}")
        try:
            return _MODELS[kind].model_validate({k: v for k, v in spec.items() if k != "type"})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigurationError(f"pixy {kind} spec: {where}: {message}") from exc

    def submit_request(self, spec: Mapping[str, Any] | PixyProperties) -> Request:
        """``POST`` to the type's collection with every field of the checked properties."""
        props = self.properties(spec)
        try:  # free-form fields (meta_data, context) may hold what JSON cannot say
            body = props.model_dump(mode="json")
        except ValueError as exc:  # pydantic's serialization error, or bytes that are not text
            raise ConfigurationError(f"pixy {props.kind} spec: not JSON: {exc}") from exc
        return self._request("POST", props.kind, f"generate {props.kind}", json_body=body)

    def parse_submission(self, response: Response, observed_at: datetime) -> Submission:
        """The created item's uid; its type follows from the collection."""
        payload = response.json()
        uid = payload.get("uid") if isinstance(payload, dict) else None
        if not isinstance(uid, str) or not _is_uid(uid):  # an id status_requests takes
            raise ProtocolError(
                "generate reply has no uid (a UUID)", operation=response.request.operation
            )
        kind = self.kind_of_url(response.request.url)
        if response.status != 201:
            _log.warning("pixy generate: HTTP %d instead of 201 for job %s", response.status, uid)
        self._track(uid, kind, payload)
        return Submission(uid, kind, observed_at, payload)

    def status_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """``GET {collection}{uid}``; each collection in turn when the type is unknown."""
        uid = self._uid(job_id)
        return [self._request("GET", k, f"get {k}", uid) for k in self._kinds(kind)]

    def delete_requests(self, job_id: str, kind: str | None) -> Sequence[Request]:
        """``DELETE {collection}{uid}`` (a soft delete: 200 with the item)."""
        uid = self._uid(job_id)
        return [self._request("DELETE", k, f"delete {k}", uid) for k in self._kinds(kind)]

    def parse_deleted(self, response: Response, observed_at: datetime) -> JobState | None:
        """The soft-deleted item (``is_deleted: true``), as the server last showed it."""
        return self.parse_state(response, observed_at, None)

    def update_requests(
        self, job_id: str, kind: str | None, changes: Mapping[str, Any]
    ) -> Sequence[Request]:
        """``PATCH {collection}{uid}`` with `changes` (405 where the route is disabled).

        Raises:
            ConfigurationError: `changes` is not a non-empty mapping.
        """
        if not isinstance(changes, Mapping) or not changes:
            raise ConfigurationError("pixy update: changes must be a non-empty mapping")
        uid = self._uid(job_id)
        body = dict(changes)
        return [
            self._request("PATCH", k, f"update {k}", uid, json_body=body) for k in self._kinds(kind)
        ]

    def list_request(
        self,
        kind: str,
        *,
        offset: int = 0,
        limit: int = 10,
        created_at_from: datetime | str | None = None,
        created_at_to: datetime | str | None = None,
    ) -> Request:
        """``GET {collection}?offset=&limit=[&created_at_from=][&created_at_to=]``.

        The range of `limit` (1–100) is the server's to check: it answers 422, raised as
        `InvalidRequest` with its details. Naive datetimes are taken as UTC.
        """
        (kind,) = self._kinds(kind)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ConfigurationError(f"pixy list: offset must be an integer, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ConfigurationError(f"pixy list: limit must be an integer, got {limit!r}")
        params = {"offset": str(offset), "limit": str(limit)}
        for key, value in (("created_at_from", created_at_from), ("created_at_to", created_at_to)):
            text = _query_time(value)
            if text is not None:
                params[key] = text
        return self._request("GET", kind, f"list {kind}", params=params)

    def parse_page(self, response: Response, observed_at: datetime) -> PixyPage:
        """The items and counts of a list reply.

        Raises:
            ProtocolError: The reply is not a page.
        """
        payload = response.json()
        kind = self.kind_of_url(response.request.url) or "image"
        fits = isinstance(payload, dict) and isinstance(payload.get("items"), list)
        counts = [payload.get(k) for k in ("total", "offset", "limit")] if fits else []
        if not fits or not all(isinstance(c, int) for c in counts):
            raise ProtocolError(
                "list reply is not a page of items", operation=response.request.operation
            )
        items = tuple(
            self.parse_item(item, kind, observed_at, None, response.request.operation)
            for item in payload["items"]
        )
        return PixyPage(kind, items, counts[0], counts[1], counts[2])

    # -- batch polling through the list -----------------------------------------------------

    def batch_status_request(self, job_ids: Sequence[str]) -> Request:
        """One page of the collection most of `job_ids` are in, narrowed to their creation times.

        The list is per type and newest first, so the page asks for the jobs created between
        the earliest and the latest of those jobs (as their create replies said). Jobs of
        other types, jobs created by another client and jobs beyond the page are left out of
        the reply; the scheduler polls those on their own.
        """
        by_kind: dict[str, list[datetime]] = {}
        for job_id in job_ids:
            known = self._tracked.get(job_id)
            if known is not None:
                by_kind.setdefault(known[0], []).append(known[1])
        if not by_kind:
            return self.list_request("image", limit=MAX_LIMIT)
        kind = max(by_kind, key=lambda k: len(by_kind[k]))
        times = by_kind[kind]
        return self.list_request(
            kind, limit=MAX_LIMIT, created_at_from=min(times), created_at_to=max(times)
        )

    def parse_batch_states(
        self, response: Response, observed_at: datetime, previous: Mapping[str, JobState]
    ) -> dict[str, JobState]:
        """The states of the listed jobs this client tracks, by uid."""
        payload = response.json()
        items = payload.get("items") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise ProtocolError(
                "list reply is not a page of items", operation=response.request.operation
            )
        kind = self.kind_of_url(response.request.url) or "image"
        states: dict[str, JobState] = {}
        for item in items:
            uid = item.get("uid") if isinstance(item, dict) else None
            if isinstance(uid, str) and (uid in self._tracked or uid in previous):
                states[uid] = self.parse_item(
                    item, kind, observed_at, previous.get(uid), response.request.operation
                )
        return states

    def _forget(self) -> None:
        self._tracked = {}

    def _track(self, uid: str, kind: str | None, item: Mapping[str, Any]) -> None:
        created = _naive_utc(item.get("created_at"))
        if kind is not None and created is not None:
            self._tracked[uid] = (kind, created)

    # -- replies ----------------------------------------------------------------------------

    def parse_state(
        self, response: Response, observed_at: datetime, previous: JobState | None
    ) -> JobState:
        """Map an item (GET, PATCH or DELETE reply) onto a `JobState` (docs/apis/pixy.md).

        Raises:
            ProtocolError: The reply is not an item, or is an item of another job.
        """
        kind = self.kind_of_url(response.request.url)
        item, asked = response.json(), response.request.job_id
        uid = item.get("uid") if isinstance(item, dict) else None
        if asked and isinstance(uid, str) and uid.lower() != asked.lower():
            raise ProtocolError(
                f"reply is about another job, {uid[:40]!r}",
                operation=response.request.operation,
                job_id=asked,
            )
        return self.parse_item(item, kind, observed_at, previous, response.request.operation)

    def parse_item(
        self,
        item: Any,
        kind: str | None,
        observed_at: datetime,
        previous: JobState | None,
        operation: str = "read item",
    ) -> JobState:
        """Map one item onto a `JobState`.

        Raises:
            ProtocolError: `item` has no uid or no task status.
        """
        uid = item.get("uid") if isinstance(item, dict) else None
        task = item.get("task_status") if isinstance(item, dict) else None
        if not isinstance(uid, str) or not isinstance(task, str):
            raise ProtocolError(
                "reply is not a Pixy item (no uid or task_status)",
                operation=operation,
                job_id=previous.job_id if previous else None,
            )
        status = item.get("status") if isinstance(item.get("status"), str) else None
        native = status if status is not None else task
        mapped = (BY_STATUS if status is not None else BY_TASK_STATUS).get(native)
        if "error" in (status, task):
            mapped = Status.ERROR
        if mapped is None:
            self.log_unknown_status(native, uid)
            keep = previous is not None and not previous.is_terminal
            mapped = previous.status if keep and previous else Status.QUEUED
        error: ErrorInfo | None = None
        if mapped is Status.ERROR:
            reason = item.get("error") or item.get("task_report") or "the job failed"
            error = ErrorInfo(None, reason if isinstance(reason, str) else str(reason))
        if item.get("is_deleted") is True and not mapped.is_terminal:
            mapped, error = Status.CANCELED, ErrorInfo("deleted", "the job was deleted")
        if previous is not None and previous.is_terminal and previous.status is not mapped:
            overrides = previous.status is Status.COMPLETE and status == "cancelled"
            if not overrides:  # terminal states are sticky (rule 3)
                return dataclasses.replace(previous, observed_at=observed_at)
        if mapped.is_terminal:
            self._tracked.pop(uid, None)
        else:
            self._track(uid, kind, item)
        progress, eta = progress_of(item.get("task_progress"), observed_at, previous)
        return JobState(
            provider=self.name,
            job_id=uid,
            status=mapped,
            native_status=native,
            observed_at=observed_at,
            progress=progress,
            eta_seconds=eta,
            outputs=outputs_of(item) if mapped is Status.COMPLETE else (),
            error=error,
            kind=kind,
            raw=item,
        )

    def parse_notification(self, payload: Any) -> Notification | None:
        """A webhook: the whole item plus ``task_type``, the server's model class name
        (``Imagination``, ``Video``, ``Subtitle``), sent on every save (docs/apis/pixy.md#webhooks).

        Raises:
            ProtocolError: The payload is not an item with a uid.
        """
        uid = payload.get("uid") if isinstance(payload, Mapping) else None
        if not isinstance(uid, str) or not uid:
            raise ProtocolError("webhook is not an item with a uid", operation="webhook")
        kind = _KIND_OF_TASK_TYPE.get(str(payload.get("task_type")))
        if kind is None:
            return None
        item = {k: v for k, v in payload.items() if k != "task_type"}
        return Notification(uid, kind, item)

    def name_fields(self, state: JobState) -> dict[str, str]:
        """``{engine}`` (the job's engine) and ``{type}`` (image, video or subtitle)."""
        return {
            "engine": name_field(state.raw.get("engine") or "pixy"),
            "type": name_field(state.kind or "job"),
        }

    def timeout_hint(self, state: JobState | None) -> str | None:
        """Draft jobs never start on their own."""
        if state is not None and state.status is Status.DRAFT:
            return "the job is a draft (Pixy does not start drafts by itself)"
        return None
