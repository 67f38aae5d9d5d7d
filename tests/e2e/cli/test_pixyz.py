"""`pollkit pixyz …` against the threaded simulator: every subcommand, error paths, exit codes."""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pollkit.cli import main
from pollkit.cli.pixyz.commands import BATCH_EXIT_CODES
from pollkit.sim import Scenario, ThreadedSimulator
from tests.helpers import assert_valid_png, job_stats, sha256_file

# Jobs end within 40 ms; packing an archive takes 20 ms.
QUICK = Scenario(time_scale=1000.0, queue_delay=10.0, render_time=30.0, archive_delay=20.0)
FAST = ("--interval", "0.01")


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(QUICK) as simulator:
        yield simulator


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "part.step"
    path.write_bytes(b"x" * 50_000)
    return path


def pixyz(sim: ThreadedSimulator, *args: str, token: str | None = "default") -> int:
    key = sim.api_key if token == "default" else token
    auth = ("-t", key) if key else ()
    return main(["pixyz", "-u", sim.urls["pixyz"], *args, *auth])


def script(tmp_path: Path, marker: str = "") -> str:
    path = tmp_path / f"job-{uuid.uuid4().hex[:8]}.py"
    path.write_text(f"# pollkit-sim: {marker}\ndef main(**params):\n    return params\n")
    return str(path)


def out_err(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_version_list_doc(sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert pixyz(sim, "version", token=None) == 0
    assert out_err(capsys)[0].startswith("pixyz-scheduler-client v0.0.8")
    assert pixyz(sim, "list", token=None) == 0
    assert "convert_file" in json.loads(out_err(capsys)[0])["processes"]
    assert pixyz(sim, "doc", "-n", "sleep", token=None) == 0
    assert out_err(capsys)[0].startswith("Process 'sleep' documentation:")
    assert pixyz(sim, "doc", "-n", "nope", token=None) == 1
    assert "process 'nope' not found" in out_err(capsys)[1]


def test_exec_batch_exit_codes_cover_the_whole_table(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "outcome=success": 0,
        "outcome=failure": 10,
        "outcome=revoked": 11,
        "stuck=RETRY queue=0": 12,
        "outcome=pending": 13,
        "queue=0 render=100000": 14,  # STARTED for the first tenth of a long render
        "stuck=RECEIVED queue=0": 15,
        "stuck=REJECTED queue=0": 16,
        "stuck=UNKNOWN queue=0": 17,
    }
    assert set(cases.values()) == {*BATCH_EXIT_CODES.values(), 17}
    for marker, code in cases.items():
        # Finished jobs end the watch themselves; the others need the deadline.
        timeout = "10" if code in (0, 10, 11) else "0.15"
        argv = ("exec", "-s", script(tmp_path, marker), "-b", "-w", *FAST, "--timeout", timeout)
        assert pixyz(sim, *argv) == code, marker
        out, _ = out_err(capsys)
        (line,) = out.splitlines()  # batch mode: only the uuid on stdout
        uuid.UUID(line)


def test_exec_batch_without_wait_and_with_result(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixyz(sim, "exec", "-s", script(tmp_path), "-b") == 0
    (job,) = out_err(capsys)[0].splitlines()
    assert job_stats(sim.stats(), job)["status"] in ("queued", "rendering", "complete")
    argv = ("exec", "-s", script(tmp_path), "-b", "-w", "-r", *FAST, "-p", '{"k": 1}')
    assert pixyz(sim, *argv) == 0
    out = out_err(capsys)[0]
    first, rest = out.split("\n", 1)
    assert json.loads(rest)["result"]["params"] == {"k": 1}
    assert json.loads(rest)["uuid"] == first


def test_exec_interactive_failure_exits_0_with_the_error(
    sim: ThreadedSimulator, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("exec", "-s", script(tmp_path, "outcome=failure"), "-i", str(model), "-w", *FAST)
    assert pixyz(sim, *argv, "-a", "nightly", "-e", "main", "-q", "cpu", "-l", "60") == 0
    out, err = out_err(capsys)
    assert "executing" in out
    assert "started" in out
    assert "Error: Traceback (most recent call last):" in out
    assert "upload" in err  # the upload bar, on stderr


def test_process_with_and_without_watch(
    sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixyz(sim, "process", "-n", "api_test", "-p", '{"a": 1}', "-w", *FAST) == 0
    out = out_err(capsys)[0]
    assert out.startswith("start api_test process\nJob [ ")
    details = json.loads(out.split(" ] completed\n", 1)[1])
    assert details["result"] == {"output": "Hello World!", "params": {"a": 1}}
    assert pixyz(sim, "process", "-n", "sleep") == 0
    assert out_err(capsys)[0].rstrip().endswith("] submitted")
    assert pixyz(sim, "process", "-n", "nope") == 1
    assert "HTTP 400: Bad Request: Invalid process 'nope'" in out_err(capsys)[1]


def test_status_details_outputs_jobs_and_downloads(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixyz(sim, "process", "-n", "convert_file", "-i", str(tmp_path / "missing")) == 1
    assert "file: no such file" in out_err(capsys)[1]
    model = tmp_path / "m.step"
    model.write_bytes(b"m" * 10)
    assert (
        pixyz(sim, "process", "-n", "convert_file", "-i", str(model), "-p", '{"extension": "glb"}')
        == 0
    )
    job = out_err(capsys)[0].split("Job [ ")[1].split(" ]")[0]
    assert pixyz(sim, "status", "-j", job, "-w", *FAST) == 0
    assert json.loads(out_err(capsys)[0])["status"] == "SUCCESS"
    for command in ("status", "details"):
        assert pixyz(sim, command, "-j", job) == 0
        assert json.loads(out_err(capsys)[0])["result"] == {"output": "output.glb"}
    assert pixyz(sim, "outputs", "-j", job) == 0
    assert json.loads(out_err(capsys)[0]) == {"outputs": ["output.glb"]}
    assert pixyz(sim, "jobs") == 0
    assert job in {j["uuid"] for j in json.loads(out_err(capsys)[0])["jobs"]}
    dest = tmp_path / "got" / "model.glb"
    assert pixyz(sim, "download", "-j", job, "-f", "output.glb", "-o", str(dest)) == 0
    (served,) = job_stats(sim.stats(), job)["outputs"]
    assert sha256_file(dest) == served["sha256"]
    assert pixyz(sim, "download", "-j", job, "-f", "nothing.bin", "-o", str(dest)) == 1
    assert "SharePathNotFoundError: File 'outputs/nothing.bin' not found" in out_err(capsys)[1]
    archive = tmp_path / "zips" / "all.zip"
    assert pixyz(sim, "download_all", "-j", job, "-o", str(archive), *FAST) == 0
    assert zipfile.ZipFile(archive).namelist() == ["output.glb"]


def test_download_all_gives_up_after_at_most_31_requests_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = QUICK.replace(archive_delay=1e9)
    with ThreadedSimulator(slow) as sim:
        assert pixyz(sim, "process", "-n", "api_test", "-w", *FAST) == 0
        job = out_err(capsys)[0].split("Job [ ")[1].split(" ]")[0]
        argv = ("download_all", "-j", job, "-o", str(tmp_path / "a.zip"), "--interval", "0.005")
        assert pixyz(sim, *argv) == 0
        routes = sim.stats()["requests"]["by_route"]
    assert out_err(capsys)[0] == "The outputs packaging task job is running\n"
    # One request, then one per interval until 30 intervals have passed (latency may eat some).
    assert 2 <= routes["GET /pixyz/jobs/{job_uuid}/outputs/archive"] <= 31
    assert not (tmp_path / "a.zip").exists()


def test_convert_thumbnails_metadata(
    sim: ThreadedSimulator, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c" / "part.glb"
    assert (
        pixyz(sim, "convert", "-i", str(model), "-p", '{"extension": "glb"}', "-o", str(out), *FAST)
        == 0
    )
    assert out.read_bytes()[:4] == b"glTF"
    assert out_err(capsys)[0].endswith(f"saved {out}\n")
    assert pixyz(sim, "convert", "-i", str(model), *FAST) == 0
    assert json.loads(out_err(capsys)[0].split("\n", 1)[1])["result"] == {"output": "output.pxz"}
    folder = tmp_path / "t" / "thumbs"
    argv = ("thumbnails", "-i", str(model), "-p", '{"width": 6, "height": 4}', "-o", str(folder))
    assert pixyz(sim, *argv, *FAST) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["iso.png", "x.png", "y.png", "z.png", "preview.glb", "metadata.json"]
    )
    assert assert_valid_png((folder / "iso.png").read_bytes()) == (6, 4)
    assert out_err(capsys)[0].count("saved ") == 6
    assert pixyz(sim, "thumbnails", "-i", str(model), *FAST) == 0
    assert json.loads(out_err(capsys)[0].split("\n", 1)[1])["outputs"][0] == "iso.png"
    meta = tmp_path / "m" / "meta.json"
    assert pixyz(sim, "metadata", "-i", str(model), "-o", str(meta), *FAST) == 0
    assert len(json.loads(meta.read_text())) == 16
    out_err(capsys)
    assert pixyz(sim, "metadata", "-i", str(model), *FAST) == 0
    assert "aabb" in json.loads(out_err(capsys)[0].split("\n", 1)[1])


def test_composite_commands_fail_when_the_job_does(
    sim: ThreadedSimulator, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.plan_next("error")
    assert pixyz(sim, "convert", "-i", str(model), *FAST) == 1
    assert "ended in FAILURE: Traceback" in out_err(capsys)[1]


@pytest.mark.parametrize(
    ("params", "message"), [("{bad", "-p is not valid JSON"), ('"x"', "-p must be a JSON object")]
)
def test_invalid_params_exit_1_without_traceback(
    sim: ThreadedSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    params: str,
    message: str,
) -> None:
    assert pixyz(sim, "exec", "-s", script(tmp_path), "-p", params) == 1
    err = out_err(capsys)[1]
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_tokens(
    sim: ThreadedSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixyz(sim, "jobs", token="bad-token-456") == 1
    err = out_err(capsys)[1]
    assert "HTTP 401: Invalid token" in err
    assert "bad-token-456" not in err
    assert pixyz(sim, "jobs", token=None) == 2
    assert "token is required" in out_err(capsys)[1]
    monkeypatch.setenv("PIXYZ_API_KEY", sim.api_key)
    assert pixyz(sim, "jobs", token=None) == 0
    assert sim.api_key not in "".join(out_err(capsys))


def test_unknown_job_watch_times_out_with_the_hint(
    sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixyz(sim, "status", "-j", str(uuid.uuid4()), "-w", *FAST, "--timeout", "0.1") == 1
    out, err = out_err(capsys)
    assert json.loads(out)["status"] == "PENDING"
    assert "the job id may be wrong" in err
    assert pixyz(sim, "status", "-j", "not-a-uuid") == 1
    assert "job id must be a uuid" in out_err(capsys)[1]


def test_usage_errors_exit_2(sim: ThreadedSimulator) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pixyz", "download", "-j", str(uuid.uuid4())])
    assert info.value.code == 2
