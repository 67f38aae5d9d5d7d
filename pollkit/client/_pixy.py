"""`PixyClient`: `AsyncClient` plus the Pixy operations that are not about waiting for a job.

Submitting, reading, waiting, batches and downloads are the generic client's. Pixy also lists
its jobs (offset pages) and updates them; the `Pixy` provider describes those
requests and parses their replies, and this client sends them through the same session, key
check, retries and error mapping::

    async with PixyClient(Pixy(api_key=key)) as client:
        async for state in client.list_all("image"):
            print(state.job_id, state.status, state.raw["task_report"])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from typing import Any

from pollkit.client._async import AsyncClient
from pollkit.errors import APIError, ConfigurationError, UnsupportedOperation
from pollkit.models import JobState
from pollkit.providers.pixy import MAX_LIMIT, Pixy, PixyPage

__all__ = ["PixyClient"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


class PixyClient(AsyncClient):
    """An `AsyncClient` for `Pixy`, with `list_page`, `list_all` and `update` (`delete` returns
    the soft-deleted job).

    Args:
        provider: The Pixy provider.
        **kwargs: As for `AsyncClient`.

    Raises:
        ConfigurationError: `provider` is not a `Pixy`, or another argument is invalid.
    """

    def __init__(self, provider: Pixy, **kwargs: Any) -> None:
        if not isinstance(provider, Pixy):
            raise ConfigurationError(f"PixyClient needs a Pixy provider, got {provider!r}")
        super().__init__(provider, **kwargs)
        self.pixy = provider

    async def list_page(
        self,
        kind: str,
        *,
        offset: int = 0,
        limit: int = 10,
        created_at_from: datetime | str | None = None,
        created_at_to: datetime | str | None = None,
    ) -> PixyPage:
        """One page of the jobs of `kind`, newest first.

        Args:
            kind: ``"image"``, ``"video"`` or ``"subtitle"``.
            offset: How many matching jobs to skip.
            limit: Most jobs on the page (the server allows 1–100).
            created_at_from: Only jobs created at or after this (naive: UTC).
            created_at_to: Only jobs created at or before this (naive: UTC).

        Raises:
            InvalidRequest: The server refused the parameters (422, with its details).
            APIError, TransportError: The request failed.
        """
        request = self.pixy.list_request(
            kind,
            offset=offset,
            limit=limit,
            created_at_from=created_at_from,
            created_at_to=created_at_to,
        )
        return self.pixy.parse_page(await self.send(request), _now())

    async def list_all(
        self,
        kind: str,
        *,
        page_size: int = MAX_LIMIT,
        created_at_from: datetime | str | None = None,
        created_at_to: datetime | str | None = None,
    ) -> AsyncIterator[JobState]:
        """Every job of `kind` matching the dates, newest first, page after page
        (``offset += page_size`` until ``offset >= total``).

        Raises:
            ConfigurationError: `page_size` is not between 1 and 100.
        """
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise ConfigurationError(f"pixy list: page_size must be an integer, not {page_size!r}")
        if not 1 <= page_size <= MAX_LIMIT:
            raise ConfigurationError(f"pixy list: page_size must be 1–{MAX_LIMIT}, not {page_size}")
        offset = 0
        while True:
            page = await self.list_page(
                kind,
                offset=offset,
                limit=page_size,
                created_at_from=created_at_from,
                created_at_to=created_at_to,
            )
            for state in page.items:
                yield state
            offset += page_size
            if offset >= page.total or not page.items:
                return

    async def update(
        self, job_id: str, changes: Mapping[str, Any], *, kind: str | None = None
    ) -> JobState:
        """Change fields of a job (``PATCH``); returns the updated job.

        Raises:
            UnsupportedOperation: The server has no update route (405), as the published
                image service.
            NotFound: No such job.
            InvalidRequest: The server refused the changes.
        """
        requests = self.pixy.update_requests(job_id, kind, changes)
        try:
            response = await self.send(requests)
        except APIError as exc:
            if exc.status_code == 405:
                raise UnsupportedOperation(
                    f"pixy update job {job_id}: not supported by this server (HTTP 405)"
                ) from exc
            raise
        return self.pixy.parse_state(response, _now(), None)

    async def delete(
        self, job_id: str, *, kind: str | None = None, base_url: str | None = None
    ) -> JobState:
        """Soft-delete a job; returns it as the server last showed it (``is_deleted: true``;
        `Status.CANCELED` with reason ``deleted`` if it had not finished). Later reads of it
        raise `NotFound`.

        Raises:
            NotFound: No such job (or it was deleted already).
        """
        response = await self._on(base_url).first_found(self.pixy.delete_requests(job_id, kind))
        return self.pixy.parse_state(response, _now(), None)

    def __repr__(self) -> str:
        return f"PixyClient({self.provider!r})"
