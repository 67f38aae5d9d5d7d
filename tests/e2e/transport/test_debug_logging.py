"""The debug log: every request and response line with timings, and never a secret.

The runs below go through retries (503s, 429s), truncated downloads resumed with Range, and
signed download URLs, so the log holds every kind of line pollkit writes; then the whole of it is
searched for the key and for the signed URLs' query strings. A webhook receiver's secret (the
credential in its URL) is searched for the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from pollkit import AsyncClient, MagicHour, WebhookReceiver
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import FAST_CADENCE, FAST_RETRY, IMAGE_SPEC

KEY = "mhk_live_SECRET_do_not_log_7f3a"
QUICK = Scenario(seed=11, time_scale=1000.0, queue_delay=5.0, render_time=10.0)
REQUEST_LINE = re.compile(r"(GET|POST) http://127\.0\.0\.1:\d+/\S* -> \d{3}")


def _leaks(text: str) -> list[str]:
    """What must never be logged: the key (or its tail) and a signed URL's query string."""
    return [word for word in ("sig=", "expires=", KEY, KEY[-8:]) if word in text]


def _submit(sim: ThreadedSimulator) -> str:
    request = urllib.request.Request(
        f"{sim.url}/v1/ai-image-generator",
        data=json.dumps({"image_count": 2, "style": {"prompt": "x"}}).encode(),
        headers={"Authorization": f"Bearer {sim.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        job_id: str = json.load(reply)["id"]
    return job_id


def test_pollkit_debug_logs_every_exchange_to_stderr_without_secrets(tmp_path: Path) -> None:
    with ThreadedSimulator(QUICK, api_key=KEY) as sim:
        job_ids = [_submit_with_retries(sim) for _ in range(2)]
        sim.inject(status=503, count=1, path_prefix="/v1/image-projects")
        sim.inject(kind="truncate", count=1)  # a download cut short, then resumed
        env = {**os.environ, "POLLKIT_DEBUG": "1"}
        codes, logs = [], []
        for job_id in job_ids:
            done = subprocess.run(
                [
                    sys.executable,
                    *("-m", "pollkit", "check-result", job_id),
                    *("--base-url", sim.url, "--api-key", KEY),
                    *("--download-dir", str(tmp_path), "--poll-interval", "0.005"),
                    *("--retries", "8", "--no-progress"),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            codes.append(done.returncode)
            log = done.stderr + done.stdout
            logs.append(log)
            assert REQUEST_LINE.search(log), log
            assert not _leaks(log), _leaks(log)
        stats = sim.stats()
    assert "retrying in" in logs[0]  # the first job met the 503
    assert codes == [0, 0]
    assert len(list(tmp_path.glob("*.png"))) == 4
    # The logs above went through failures, not only 200s.
    assert stats["requests"]["by_status"].get("503", 0) == 1
    assert stats["requests"]["download_faults"]["truncate"] == 1


def _submit_with_retries(sim: ThreadedSimulator) -> str:
    # The scenario fails some submits on purpose; a test helper may retry them blindly.
    for _ in range(20):
        try:
            return _submit(sim)
        except urllib.error.HTTPError:
            continue
    raise AssertionError("the simulator refused 20 submits in a row")


async def test_a_logger_passed_in_gets_every_line_and_no_secret(tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("my_pipeline.http")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Keep())
    try:
        async with Simulator(QUICK, api_key=KEY) as sim:
            provider = MagicHour(api_key=KEY, base_url=sim.url)
            client = AsyncClient(
                provider,
                cadence=FAST_CADENCE,
                retry=FAST_RETRY.model_copy(update={"max_attempts": 10}),
                logger=logger,
            )
            sim.inject(status=503, count=2, path_prefix="/v1/image-projects")
            sim.inject(status=429, count=1, retry_after=0.01, path_prefix="/v1/image-projects")
            sim.inject(kind="truncate", count=2)
            async with client:
                results = [
                    await client.submit_and_check(IMAGE_SPEC, download_directory=tmp_path)
                    for _ in range(3)
                ]
    finally:
        logger.handlers.clear()
    lines = [r.getMessage() for r in records]
    text = "\n".join(lines)
    assert all(r.ok for r in results)
    assert sum(bool(REQUEST_LINE.search(line)) for line in lines) >= 3 * 3  # submit, poll, files
    assert any("download headers" in line for line in lines)
    assert any("retrying in" in line for line in lines)
    assert not _leaks(text), _leaks(text)


async def test_a_webhook_receivers_secret_is_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "hook_SECRET_do_not_log_0123456789"
    async with Simulator(QUICK, api_key=KEY) as sim:
        provider = MagicHour(api_key=KEY, base_url=sim.url)
        receiver = WebhookReceiver(provider, secret=secret)
        with caplog.at_level(logging.DEBUG):
            async with AsyncClient(
                provider, cadence=FAST_CADENCE, retry=FAST_RETRY, push=receiver
            ) as client:
                async with aiohttp.ClientSession() as session:
                    register = {"url": receiver.url}
                    async with session.post(f"{sim.url}/_sim/webhooks/magichour", json=register):
                        pass
                    for url, body in (
                        (receiver.url, b"{not json"),  # refused: logged
                        (receiver.url.replace(secret, "guess"), b"{}"),  # wrong path: 404
                    ):
                        headers = {"Content-Type": "application/json"}
                        async with session.post(url, data=body, headers=headers) as reply:
                            assert reply.status in (400, 404)
                result = await client.submit_and_check(IMAGE_SPEC, download_directory=tmp_path)
    assert result.ok
    # The simulator plays the vendor, which holds the URL: only pollkit's side is checked.
    ours = [r for r in caplog.records if not r.name.startswith("pollkit.sim")]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    assert "webhook refused" in text
    assert not _leaks(text), _leaks(text)
    assert secret not in text
    assert secret[-10:] not in text
