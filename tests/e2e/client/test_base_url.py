"""`base_url` per call: the same provider (key, settings) talking to another server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pollkit import AsyncClient, Client, ConfigurationError, MagicHour, Pixyz, Status
from pollkit.sim import Scenario, Simulator, ThreadedSimulator
from tests.helpers import FAST_CADENCE, FAST_RETRY, job_stats, sha256_file

SCENARIO = Scenario(time_scale=1000.0, seed=4, image_size=(8, 8))
KEY = "mhk_shared_between_two_servers"
IMAGE = {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a gull"}}


async def test_every_call_goes_to_the_server_it_names(tmp_path: Path) -> None:
    async with Simulator(SCENARIO, api_key=KEY) as home, Simulator(SCENARIO, api_key=KEY) as away:
        provider = MagicHour(api_key=KEY, base_url=home.url)
        async with AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
            job = await client.submit(IMAGE, base_url=away.url + "/")
            state = await client.get(job.job_id, kind="image", base_url=away.url)
            result = await client.check_result(
                job.job_id, download_directory=tmp_path, kind="image", base_url=away.url
            )
            again = await client.submit_and_check(IMAGE, tmp_path / "2", base_url=away.url)
            await client.delete(job.job_id, kind="image", base_url=away.url)
            with pytest.raises(ConfigurationError, match="base_url must be http"):
                await client.get(job.job_id, base_url="ftp://elsewhere")
            home_job = await client.submit(IMAGE)  # no base_url: the client's own server
        assert provider.base_url == home.url  # the client's provider is left as it was
        assert state.job_id == job.job_id
        assert result.status is Status.COMPLETE
        assert again.status is Status.COMPLETE
        served = job_stats(away.stats(), job.job_id)
        assert served["deleted"]
        assert [sha256_file(p) for p in result.downloaded_paths] == [
            o["sha256"] for o in served["outputs"]
        ]
        assert [j["id"] for j in home.stats()["jobs"]] == [home_job.job_id]
        assert len(away.stats()["jobs"]) == 2


async def test_the_key_goes_with_downloads_from_the_other_server_only(tmp_path: Path) -> None:
    model = tmp_path / "part.step"
    model.write_bytes(b"ISO-10303-21;" * 50)
    spec = {"process": "generate_thumbnails", "file": str(model), "params": {"width": 4}}
    async with Simulator(SCENARIO, api_key=KEY) as home, Simulator(SCENARIO, api_key=KEY) as away:
        provider = Pixyz(api_key=KEY, base_url=home.urls["pixyz"])
        async with AsyncClient(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
            job = await client.submit(spec, base_url=away.urls["pixyz"])
            result = await client.check_result(
                job.job_id, download_directory=tmp_path / "out", base_url=away.urls["pixyz"]
            )
    # PiXYZ serves its files only with the key: it reached the other server's file routes.
    assert result.ok
    assert len(result.downloaded_paths) == 6
    assert home.stats()["requests"]["total"] == 0


def test_the_blocking_client_takes_base_url_too(tmp_path: Path) -> None:
    with ThreadedSimulator(SCENARIO, api_key=KEY) as away:
        provider = MagicHour(api_key=KEY, base_url="http://127.0.0.1:9")  # nothing listens
        with Client(provider, cadence=FAST_CADENCE, retry=FAST_RETRY) as client:
            job = client.submit(IMAGE, base_url=away.url)
            state = client.wait(job.job_id, kind="image", base_url=away.url)
            result = client.check_result(
                job.job_id, download_directory=tmp_path, kind="image", base_url=away.url
            )
        assert state.status is Status.COMPLETE
        assert len(result.downloaded_paths) == 2
