"""`pollkit sim` as a process: first line, a real request, clean exit on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import pollkit

CLI = Path(pollkit.__file__).parent / "cli"

# Loads pollkit/cli/sim.py on its own, so the test does not depend on the other subcommands.
_STANDALONE = f"""
import argparse, importlib.util, sys
spec = importlib.util.spec_from_file_location("_pollkit_cli_sim", {str(CLI / "sim.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
parser = argparse.ArgumentParser(prog="pollkit")
module.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def _run(argv: list[str], stop: signal.Signals) -> None:
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("pollkit sim: serving http://127.0.0.1:"), first
        url, key = first.split()[3], first.split()[4]
        assert key == "api_key=mhk_cli"
        dialects = [process.stdout.readline().split() for _ in range(4)]
        assert [(d[2], d[4]) for d in dialects] == [
            ("magichour", url),
            ("pixy", f"{url}/pixy"),
            ("pixyz", f"{url}/pixyz"),
            ("flux0", f"{url}/flux0"),
        ]
        with urllib.request.urlopen(f"{url}/_sim/stats", timeout=10) as response:
            stats = json.loads(response.read())
        assert stats["time_scale"] == 50.0
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


ARGS = ["sim", "--port", "0", "--api-key", "mhk_cli", "--scenario", "fast", "--time-scale", "50"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sim_command_module(stop: signal.Signals) -> None:
    _run([sys.executable, "-c", _STANDALONE, *ARGS, "--seed", "4"], stop)


@pytest.mark.skipif(
    not (CLI / "demo.py").exists() or not (CLI / "check_result.py").exists(),
    reason="the other subcommands are not written yet",
)
def test_python_m_pollkit_sim() -> None:
    _run([sys.executable, "-m", "pollkit", *ARGS], signal.SIGTERM)


def test_unknown_scenario_is_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _STANDALONE, "sim", "--port", "0", "--scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown scenario" in result.stderr


def _call(url: str, key: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        found: dict[str, object] = json.loads(response.read())
        return found


def test_video_bytes_sets_the_size_of_every_generated_video() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _STANDALONE, *ARGS[:-1], "1000", "--video-bytes", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        spec = {"end_seconds": 5, "style": {"prompt": "a paper boat"}}
        job = _call(f"{url}/v1/text-to-video", "mhk_cli", spec)
        project: dict[str, object] = {}
        for _ in range(1000):  # a failure guard: the render takes milliseconds at 1000×
            project = _call(f"{url}/v1/video-projects/{job['id']}", "mhk_cli")
            if project["status"] == "complete":
                break
        assert project["status"] == "complete"
        downloads = project["downloads"]
        assert isinstance(downloads, list)
        assert len(downloads) == 1
        with urllib.request.urlopen(downloads[0]["url"], timeout=10) as response:
            assert len(response.read()) == 5000
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)


def test_a_video_size_below_the_minimum_is_exit_2_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _STANDALONE, "sim", "--port", "0", "--video-bytes", "10"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "video_bytes" in result.stderr
