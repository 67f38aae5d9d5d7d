"""Conformance: the official `magic-hour` SDK runs unmodified against the simulator."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import magic_hour
import pytest

from pollkit.sim import SCENARIOS, Simulator, ThreadedSimulator

ANIMATION_ARGS: dict[str, Any] = {
    "assets": {"audio_source": "none"},
    "end_seconds": 2.0,
    "fps": 12.0,
    "height": 512,
    "width": 512,
    "style": {
        "art_style": "Painterly Illustration",
        "camera_effect": "Simple Zoom In",
        "prompt_type": "ai_choose",
        "transition_speed": 5,
    },
}


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGIC_HOUR_POLL_INTERVAL", "0.01")


@pytest.fixture(scope="module")
def threaded() -> Iterator[ThreadedSimulator]:
    """One threaded simulator for the module's sync SDK tests."""
    with ThreadedSimulator(SCENARIOS["fast"]) as sim:
        yield sim


@pytest.fixture
def client(threaded: ThreadedSimulator) -> Iterator[magic_hour.Client]:
    """The sync SDK pointed at the simulator (its HTTP client closed afterwards)."""
    with httpx.Client(timeout=10) as transport:
        yield magic_hour.Client(
            token=threaded.api_key, base_url=threaded.url, httpx_client=transport
        )


def _sha256s(paths: list[str] | None) -> list[str]:
    assert paths is not None
    return [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths]


def _stats_sha256s(sim: ThreadedSimulator | Simulator, job_id: str) -> list[str]:
    (row,) = [job for job in sim.stats()["jobs"] if job["id"] == job_id]
    return [output["sha256"] for output in row["outputs"]]


def test_image_check_result_downloads_the_outputs(
    threaded: ThreadedSimulator, client: magic_hour.Client, tmp_path: Path
) -> None:
    created = client.v1.ai_image_generator.create(
        image_count=3, style={"prompt": "a lighthouse"}, name="lighthouse"
    )
    assert created.credits_charged == created.frame_cost == 15
    result = client.v1.image_projects.check_result(
        created.id,
        wait_for_completion=True,
        download_outputs=True,
        download_directory=str(tmp_path),
    )
    assert result.status == "complete"
    assert result.type_ == "AI_IMAGE"
    assert result.name == "lighthouse"
    assert result.downloaded_paths == [str(tmp_path / f"output-{i}.png") for i in range(3)]
    assert _sha256s(result.downloaded_paths) == _stats_sha256s(threaded, created.id)


@pytest.mark.parametrize("route", ["text_to_video", "animation"])
def test_video_check_result_downloads_the_output(
    threaded: ThreadedSimulator, client: magic_hour.Client, tmp_path: Path, route: str
) -> None:
    if route == "text_to_video":
        created = client.v1.text_to_video.create(end_seconds=5.0, style={"prompt": "a boat"})
    else:
        created = client.v1.animation.create(**ANIMATION_ARGS)
    assert created.credits_charged == created.estimated_frame_cost
    result = client.v1.video_projects.check_result(
        created.id,
        wait_for_completion=True,
        download_outputs=True,
        download_directory=str(tmp_path),
    )
    assert result.status == "complete"
    assert result.download is not None
    assert result.download.url == result.downloads[0].url
    assert _sha256s(result.downloaded_paths) == _stats_sha256s(threaded, created.id)


def test_get_delete_and_errors(threaded: ThreadedSimulator, client: magic_hour.Client) -> None:
    created = client.v1.ai_image_generator.create(image_count=1, style={"prompt": "x"})
    project = client.v1.image_projects.get(id=created.id)
    assert project.id == created.id
    assert project.status in ("queued", "rendering", "complete")
    assert client.v1.image_projects.delete(id=created.id) is None
    assert client.v1.image_projects.get(id=created.id).enabled is False
    with pytest.raises(magic_hour.ApiError) as missing:
        client.v1.video_projects.get(id=created.id)
    assert missing.value.status_code == 404
    assert missing.value.body == {"message": "Not Found"}
    with httpx.Client() as transport:
        anonymous = magic_hour.Client(base_url=threaded.url, httpx_client=transport)
        with pytest.raises(magic_hour.ApiError) as unauthorized:
            anonymous.v1.image_projects.get(id="cdoesnotexist")
    assert unauthorized.value.status_code == 401


@pytest.mark.parametrize("outcome", ["error", "canceled"])
def test_check_result_returns_failures(
    threaded: ThreadedSimulator, client: magic_hour.Client, tmp_path: Path, outcome: str
) -> None:
    threaded.plan_next(outcome=outcome)
    created = client.v1.text_to_video.create(end_seconds=3.0, style={"prompt": "x"})
    result = client.v1.video_projects.check_result(
        created.id,
        wait_for_completion=True,
        download_outputs=True,
        download_directory=str(tmp_path),
    )
    assert result.status == outcome
    assert result.downloaded_paths is None
    assert (result.error is not None) == (outcome == "error")
    assert list(tmp_path.iterdir()) == []


def test_check_result_polls_once_per_status_change(
    threaded: ThreadedSimulator, client: magic_hour.Client
) -> None:
    # Durations long enough (in real time) that the SDK sees both queued and rendering.
    threaded.plan_next(outcome="complete", queue_delay=50, render_time=50)
    created = client.v1.ai_image_generator.create(image_count=1, style={"prompt": "x"})
    result = client.v1.image_projects.check_result(
        created.id, wait_for_completion=True, download_outputs=False
    )
    assert result.status == "complete"
    assert result.downloaded_paths is None
    (row,) = [job for job in threaded.stats()["jobs"] if job["id"] == created.id]
    assert row["status_requests"] >= 3


async def test_async_client(tmp_path: Path) -> None:
    async with Simulator(SCENARIOS["fast"]) as sim, httpx.AsyncClient(timeout=10) as transport:
        client = magic_hour.AsyncClient(token=sim.api_key, base_url=sim.url, httpx_client=transport)
        image = await client.v1.ai_image_generator.create(image_count=2, style={"prompt": "x"})
        (tmp_path / "images").mkdir()
        result = await client.v1.image_projects.check_result(
            image.id,
            wait_for_completion=True,
            download_outputs=True,
            download_directory=str(tmp_path / "images"),
        )
        assert result.status == "complete"
        assert _sha256s(result.downloaded_paths) == _stats_sha256s(sim, image.id)

        video = await client.v1.animation.create(**ANIMATION_ARGS)
        (tmp_path / "videos").mkdir()
        video_result = await client.v1.video_projects.check_result(
            video.id,
            wait_for_completion=True,
            download_outputs=True,
            download_directory=str(tmp_path / "videos"),
        )
        assert video_result.status == "complete"
        assert _sha256s(video_result.downloaded_paths) == _stats_sha256s(sim, video.id)
        await client.v1.video_projects.delete(id=video.id)
        assert (await client.v1.video_projects.get(id=video.id)).enabled is False
