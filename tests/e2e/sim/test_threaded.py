"""`ThreadedSimulator` driven from plain synchronous code."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from pollkit.sim import Scenario, ThreadedSimulator
from tests.e2e.sim.helpers import IMAGE_BODY, MANUAL


def _call(
    sim: ThreadedSimulator, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        sim.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {sim.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_sync_code_drives_a_threaded_simulator() -> None:
    with ThreadedSimulator(MANUAL, api_key="mhk_sync") as sim:
        assert sim.url.startswith("http://127.0.0.1:")
        assert sim.api_key == "mhk_sync"
        assert sim.scenario is MANUAL
        sim.plan_next(outcome="complete", queue_delay=1, render_time=1)
        status, reply = _call(sim, "POST", "/v1/ai-image-generator", IMAGE_BODY)
        assert status == 200
        job_id = reply["id"]
        assert _call(sim, "GET", f"/v1/image-projects/{job_id}")[1]["status"] == "queued"
        sim.clock.advance(5)
        assert _call(sim, "GET", f"/v1/image-projects/{job_id}")[1]["status"] == "complete"
        sim.inject(status=503, count=1)
        assert _call(sim, "GET", f"/v1/image-projects/{job_id}")[0] == 503
        assert sim.stats()["requests"]["injected"] == 1
        second = _call(sim, "POST", "/v1/ai-image-generator", IMAGE_BODY)[1]["id"]
        assert sim.cancel(second) == "canceled"
        status, stats = _call(sim, "GET", "/_sim/stats")
        assert status == 200
        assert [job["status"] for job in stats["jobs"]] == ["complete", "canceled"]
    with pytest.raises(RuntimeError):
        _ = sim.url  # stopped


def test_methods_are_safe_from_many_threads() -> None:
    with ThreadedSimulator(Scenario(time_scale=1000.0, queue_delay=0, render_time=0)) as sim:

        def worker() -> None:
            for _ in range(5):
                sim.plan_next(outcome="complete")
                assert _call(sim, "POST", "/v1/ai-image-generator", IMAGE_BODY)[0] == 200
                sim.stats()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        jobs = sim.stats()["jobs"]
    assert len(jobs) == 20
    assert {job["status"] for job in jobs} == {"complete"}


def test_a_busy_port_raises() -> None:
    with (
        ThreadedSimulator(MANUAL) as first,
        pytest.raises(OSError, match=r"(?i)in use"),
        ThreadedSimulator(MANUAL, port=first.port),
    ):
        pass
