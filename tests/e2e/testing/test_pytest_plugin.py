"""The pytest plugin, as a user meets it: a suite of their own, in a directory of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

USER_SUITE = """
import pytest

import pollkit
from pollkit.sim import Scenario

# The simulator's jobs take milliseconds: poll accordingly.
QUICK = pollkit.Cadence(initial=0.005, maximum=0.05)


def test_a_pipeline_runs_against_the_simulator(magichour_provider, pollkit_sim, tmp_path):
    spec = {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a kite"}}
    with pollkit.Client(magichour_provider, cadence=QUICK) as client:
        result = client.submit_and_check(spec, download_directory=tmp_path)
    assert result.ok
    assert len(result.downloaded_paths) == 2
    served = {o["sha256"] for j in pollkit_sim.stats()["jobs"] for o in j["outputs"]}
    assert set(result.sha256) == served


@pytest.mark.pollkit_scenario(Scenario(time_scale=1000.0, failure_rate=1.0))
def test_a_marker_chooses_the_scenario(magichour_provider):
    spec = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "x"}}
    with pollkit.Client(magichour_provider, cadence=QUICK) as client:
        result = client.submit_and_check(spec, download_outputs=False)
    assert result.status is pollkit.Status.ERROR


def test_every_api_has_a_ready_provider(pixy_provider, pixyz_provider, tmp_path):
    with pollkit.Client(pixy_provider, cadence=QUICK) as client:
        spec = {"type": "image", "engine": "photon_flash", "delineation": "a kite"}
        assert client.submit_and_check(spec, download_directory=tmp_path / "pixy").ok
    model = tmp_path / "part.step"
    model.write_bytes(b"solid")
    with pollkit.Client(pixyz_provider, cadence=QUICK) as client:
        spec = {"process": "convert_file", "file": str(model)}
        result = client.submit_and_check(spec, download_directory=tmp_path / "pixyz")
    assert result.ok
    assert len(result.downloaded_paths) == 1


def test_each_test_gets_a_fresh_simulator(pollkit_sim):
    assert pollkit_sim.stats()["jobs"] == []
    assert pollkit_sim.scenario.time_scale == 1000.0  # the "fast" default
"""


def test_a_users_suite_gets_the_fixtures_without_any_setup(tmp_path: Path) -> None:
    (tmp_path / "test_pipeline.py").write_text(textwrap.dedent(USER_SUITE))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers"],
        cwd=tmp_path,
        # A user's suite, not ours: options given to the outer run stay out of it.
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
