"""The `pollkit` command: check-result exit codes, the demo, and the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollkit.cli import main
from pollkit.cli.check_result import ExitCode
from pollkit.sim import Scenario, ThreadedSimulator
from tests.helpers import assert_valid_png, free_port, job_stats, sha256_file

ROOT = Path(__file__).resolve().parents[3]
# Real time, but short: a job is done within 40 ms.
QUICK = Scenario(time_scale=1000.0, queue_delay=10.0, render_time=30.0)


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(QUICK) as simulator:
        yield simulator


def submit(sim: ThreadedSimulator, tool: str = "ai-image-generator") -> str:
    import urllib.request

    body = {"image_count": 1, "style": {"prompt": "x"}}
    request = urllib.request.Request(
        f"{sim.url}/v1/{tool}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {sim.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        job_id: str = json.load(reply)["id"]
    return job_id


def check(sim: ThreadedSimulator, *args: str, key: str | None = None) -> int:
    return main(
        [
            "check-result",
            *("--base-url", sim.url, "--api-key", key or sim.api_key),
            *("--poll-interval", "0.01", "--no-progress"),
            *args,  # last, so that a test's own flags win
        ]
    )


def test_complete_job_exits_0_and_saves_the_files(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = submit(sim)
    code = check(sim, job_id, "--download-dir", str(tmp_path), "--json")
    assert code == ExitCode.COMPLETE == 0
    summary = json.loads(capsys.readouterr().out)
    (output,) = job_stats(sim.stats(), job_id)["outputs"]
    assert summary["status"] == "complete"
    assert summary["sha256"] == [output["sha256"]]
    assert sha256_file(Path(summary["files"][0])) == output["sha256"]


@pytest.mark.parametrize(
    ("outcome", "code"), [("error", ExitCode.JOB_ERROR), ("canceled", ExitCode.JOB_CANCELED)]
)
def test_failed_and_canceled_jobs_have_their_own_codes(
    sim: ThreadedSimulator,
    tmp_path: Path,
    outcome: str,
    code: ExitCode,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim.plan_next(outcome=outcome)
    job_id = submit(sim)
    assert check(sim, job_id, "--download-dir", str(tmp_path)) == code
    assert f"job {job_id}: {outcome}" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_timeout_not_finished_and_api_errors(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.plan_next(outcome="draft")
    stuck = submit(sim)
    assert check(sim, stuck, "--timeout", "0.2") == ExitCode.TIMEOUT
    assert "not finished after 0.2 s (last status draft)" in capsys.readouterr().err
    assert check(sim, stuck, "--no-wait") == ExitCode.NOT_FINISHED
    assert check(sim, "cunknown") == ExitCode.API_ERROR
    assert check(sim, stuck, key="mhk_bad") == ExitCode.API_ERROR
    err = capsys.readouterr().err
    assert "HTTP 404: Not Found" in err
    assert "HTTP 401: Unauthorized" in err
    assert "mhk_bad" not in err
    assert sim.api_key not in err


def test_bad_usage_exits_2(sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(sim, "cx", key=" ") == ExitCode.USAGE
    assert "no API key" in capsys.readouterr().err
    assert check(sim, "cx", "--timeout", "-1") == ExitCode.USAGE
    assert "timeout must be > 0" in capsys.readouterr().err
    assert check(sim, "cx", "--poll-interval", "0") == ExitCode.USAGE
    assert "initial: Input should be greater than 0" in capsys.readouterr().err
    assert check(sim, "cx", "--retries", "-1") == ExitCode.USAGE
    assert "max_attempts" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["check-result"])
    assert info.value.code == ExitCode.USAGE


def test_unreachable_server_is_a_network_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nobody listens on it
    url = f"http://127.0.0.1:{port}"
    code = main(["check-result", "cx", "--base-url", url, "--api-key", "k", "--retries", "0"])
    assert code == ExitCode.NETWORK_ERROR
    assert "connection failed" in capsys.readouterr().err


def test_demo_runs_and_leaves_valid_pngs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--jobs", "6", "--out", str(out), "--no-progress", "--time-scale", "200"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["job", "tool", "status", "polls", "files"]
    # Planned: job 3 fails and job 5 is canceled; the others complete.
    statuses = [line.split()[2] for line in table.splitlines()[2:8]]
    assert statuses == ["complete", "complete", "complete", "error", "complete", "canceled"]
    pngs = sorted(out.glob("*.png"))
    assert pngs
    assert all(assert_valid_png(p.read_bytes()) for p in pngs)
    assert len(list(out.glob("*.mp4"))) >= 2
    assert not list(out.glob("*.part"))


def run_python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLLKIT_", "MAGIC_HOUR_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_dash_m_and_help_lists_exit_codes(tmp_path: Path) -> None:
    done = run_python("-m", "pollkit", "check-result", "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "exit status:" in done.stdout
    assert "the job was canceled" in done.stdout


@pytest.mark.parametrize(
    "example", ["check_result.py", "check_result_sync.py", "pixyz_pipeline.py", "pixy_batch.py"]
)
def test_examples_run_as_they_are(example: str, tmp_path: Path) -> None:
    done = run_python(str(ROOT / "examples" / example), "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ": complete after" in done.stdout
    assert any(tmp_path.iterdir())
