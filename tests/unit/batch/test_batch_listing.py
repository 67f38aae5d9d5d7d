"""Batched status polling: a provider with a list endpoint refreshes many jobs per request."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aioresponses import CallbackResult

from pollkit import AsyncClient, Cadence, JobState, MagicHour, Status
from pollkit.providers import Request, Response
from tests.fakenet import aioresponses

BASE = "http://api.test"


class ListingMagicHour(MagicHour):
    """Magic Hour plus a made-up list endpoint, as Pixy and PiXYZ have one."""

    batch_status_limit = 50

    def batch_status_request(self, job_ids: Sequence[str]) -> Request:
        return self._request(
            "GET", "/v1/projects", "list projects", params={"ids": ",".join(job_ids)}
        )

    def parse_batch_states(
        self, response: Response, observed_at: datetime, previous: Mapping[str, JobState]
    ) -> dict[str, JobState]:
        states = {}
        for project in response.json()["projects"]:
            one = Request(
                "GET",
                f"{self.base_url}/v1/image-projects/{project['id']}",
                "get",
                job_id=project["id"],
            )
            reply = Response(200, {}, json.dumps(project).encode(), one)
            states[project["id"]] = self.parse_state(
                reply, observed_at, previous.get(project["id"])
            )
        return states


def project(job_id: str, status: str) -> dict[str, Any]:
    return {"id": job_id, "status": status, "enabled": True, "downloads": [], "error": None}


async def test_due_jobs_are_refreshed_by_one_list_request(tmp_path: Path) -> None:
    created = iter(f"j{i}" for i in range(1000))
    seen: dict[str, int] = {}
    requests = {"list": 0, "single": 0}

    def observe(job_id: str) -> dict[str, Any]:
        # Every job is queued when first seen and complete from its second observation on.
        seen[job_id] = seen.get(job_id, 0) + 1
        return project(job_id, "complete" if seen[job_id] > 1 else "queued")

    def submit(url: Any, **kwargs: Any) -> CallbackResult:
        return CallbackResult(payload={"id": next(created), "credits_charged": 1, "frame_cost": 1})

    def listing(url: Any, **kwargs: Any) -> CallbackResult:
        requests["list"] += 1
        ids = kwargs["params"]["ids"].split(",")
        return CallbackResult(payload={"projects": [observe(i) for i in ids]})

    def single(url: Any, **kwargs: Any) -> CallbackResult:
        requests["single"] += 1
        return CallbackResult(payload=observe(str(url).rsplit("/", 1)[-1]))

    specs = [
        {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": f"p{i}"}}
        for i in range(40)
    ]
    provider = ListingMagicHour(api_key="k", base_url=BASE)
    cadence = Cadence(initial=0.05, maximum=0.05, jitter=0.0, timeout=10)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v1/ai-image-generator", callback=submit, repeat=True)
        mocked.get(re.compile(rf"^{BASE}/v1/projects\b.*"), callback=listing, repeat=True)
        mocked.get(re.compile(rf"^{BASE}/v1/image-projects/.*"), callback=single, repeat=True)
        async with AsyncClient(provider, cadence=cadence) as client:
            results = [
                r
                async for r in client.run(
                    specs, download_directory=tmp_path, journal=False, download_outputs=False
                )
            ]
    assert [r.status for r in results] == [Status.COMPLETE] * 40
    observations = sum(seen.values())
    assert observations >= 80  # two per job at least
    # Far fewer requests than observations: most came in lists.
    assert requests["list"] + requests["single"] <= observations / 3
    assert requests["list"] > requests["single"]
