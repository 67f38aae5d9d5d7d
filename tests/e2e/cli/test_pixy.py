"""`pollkit pixy …` against the simulator: JSON on stdout, errors on stderr, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pollkit.cli import main
from pollkit.cli.pixy import ExitCode
from pollkit.sim import Scenario, ThreadedSimulator
from tests.helpers import assert_valid_png, free_port, job_stats, sha256_file

QUICK = Scenario(time_scale=1000.0, queue_delay=10.0, render_time=30.0)
UNKNOWN = "0b6f3c1e-2d4a-4f7b-9a51-3e2c7d8f9a10"


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    with ThreadedSimulator(QUICK) as simulator:
        yield simulator


def pixy(sim: ThreadedSimulator, action: str, *args: str, key: str | None = None) -> int:
    base = ["--base-url", sim.urls["pixy"], "--api-key", key or sim.api_key, "--retries", "0"]
    return main(["pixy", action, *base, *args])


def out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_generate_prints_the_created_item(
    sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixy(sim, "generate", "--engine", "dalle", "--delineation", "a kite") == 0
    created = out(capsys)
    assert (created["status"], created["native_status"], created["type"]) == (
        "queued",
        "init",
        "image",
    )
    assert created["item"]["task_progress"] == -1


def test_generate_wait_downloads_with_properties_from_json_and_flags(
    sim: ThreadedSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "props.json"
    spec.write_text(json.dumps({"engine": "midjourney", "delineation": "from the file"}))
    code = pixy(
        sim, "generate", "--json", f"@{spec}", "--aspect-ratio", "9:16",
        "--download-dir", str(tmp_path / "out"), "--poll-interval", "0.01", "--no-progress",
    )  # fmt: skip
    assert code == ExitCode.OK
    done = out(capsys)
    assert done["status"] == "complete"
    assert done["item"]["aspect_ratio"] == "9:16"
    served = job_stats(sim.stats(), done["uid"])
    assert [sha256_file(Path(f)) for f in done["files"]] == [o["sha256"] for o in served["outputs"]]
    assert len(done["files"]) == 4
    assert all(assert_valid_png(Path(f).read_bytes()) for f in done["files"])


@pytest.mark.parametrize(
    ("outcome", "code"), [("error", ExitCode.JOB_ERROR), ("canceled", ExitCode.JOB_CANCELED)]
)
def test_failed_and_canceled_jobs_have_their_own_codes(
    sim: ThreadedSimulator, outcome: str, code: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.plan_next(outcome=outcome)
    args = ["--engine", "photon", "--delineation", "x", "--wait", "--poll-interval", "0.01"]
    assert pixy(sim, "generate", *args) == code
    assert out(capsys)["status"] == outcome


def test_timeout_and_invalid_properties(
    sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.plan_next(outcome="draft")
    args = ["--engine", "dalle", "--delineation", "x", "--wait", "--poll-interval", "0.01"]
    assert pixy(sim, "generate", *args, "--timeout", "0.2") == ExitCode.TIMEOUT
    assert "last status draft" in capsys.readouterr().err
    before = sim.stats()["requests"]["total"]
    assert (
        pixy(sim, "generate", "--engine", "dalle", "--delineation", "x", "--aspect-ratio", "16:9")
        == 2
    )
    assert "aspect_ratio" in capsys.readouterr().err
    assert pixy(sim, "generate", "--type", "video", "--engine", "kling", "--user-prompt", "x") == 2
    assert "image_url" in capsys.readouterr().err
    assert pixy(sim, "generate", "--engine", "dalle", "--json", "[1]") == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert sim.stats()["requests"]["total"] == before


def test_get_list_update_delete(sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    uids = []
    for i in range(3):
        assert pixy(sim, "generate", "--engine", "imagen", "--delineation", f"p{i}") == 0
        uids.append(out(capsys)["uid"])
    assert pixy(sim, "get", uids[0]) == 0  # type unknown: tries each collection
    assert out(capsys)["uid"] == uids[0]
    assert pixy(sim, "list", "--limit", "2") == 0
    page = out(capsys)
    assert ([i["uid"] for i in page["items"]], page["total"]) == (uids[:0:-1], 3)
    assert pixy(sim, "list", "--limit", "1", "--all") == 0
    assert [i["uid"] for i in out(capsys)["items"]] == uids[::-1]
    assert pixy(sim, "list", "--limit", "101") == ExitCode.API_ERROR
    assert "less than or equal to 100" in capsys.readouterr().err
    assert pixy(sim, "update", uids[0], "--json", '{"meta_data": {"a": 1}}') == ExitCode.UNSUPPORTED
    assert "not supported by this server" in capsys.readouterr().err
    assert pixy(sim, "delete", uids[0], "--type", "image") == 0
    assert out(capsys)["item"]["is_deleted"] is True
    assert pixy(sim, "get", uids[0], "--type", "image") == ExitCode.NOT_FOUND
    assert "Imagination not found" in capsys.readouterr().err
    assert pixy(sim, "delete", UNKNOWN) == ExitCode.NOT_FOUND
    assert pixy(sim, "get", "not-a-uid") == ExitCode.USAGE


def test_update_where_patch_is_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedSimulator(QUICK.replace(pixy_update="enabled")) as sim:
        assert (
            pixy(sim, "generate", "--type", "video", "--engine", "luma", "--user-prompt", "x") == 0
        )
        uid = out(capsys)["uid"]
        assert pixy(sim, "update", uid, "--type", "video", "--json", '{"meta_data": {"a": 1}}') == 0
    assert out(capsys)["item"]["meta_data"] == {"a": 1}


def test_a_refused_key_exits_9_and_is_never_printed(
    sim: ThreadedSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pixy(sim, "list", key="pk_wrong_key") == ExitCode.AUTH_FAILED
    captured = capsys.readouterr()
    assert "verify API key: HTTP 401" in captured.err
    assert "pk_wrong_key" not in captured.err + captured.out
    assert sim.stats()["requests"]["by_route"] == {"POST /pixy/api_key/verify": 1}
    assert pixy(sim, "list", key=" ") == ExitCode.USAGE
    assert "no API key" in capsys.readouterr().err


def test_key_and_url_come_from_the_environment(
    sim: ThreadedSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIXY_API_KEY", sim.api_key)
    monkeypatch.setenv("PIXY_BASE_URL", sim.urls["pixy"])
    assert main(["pixy", "list", "--type", "subtitle"]) == 0
    assert out(capsys)["total"] == 0
    assert sim.api_key not in capsys.readouterr().err


def test_unreachable_server_is_a_network_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nobody listens on it
    url = f"http://127.0.0.1:{port}"
    assert (
        main(["pixy", "get", UNKNOWN, "--base-url", url, "--api-key", "k", "--retries", "0"]) == 7
    )
    assert "connection failed" in capsys.readouterr().err


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["pixy", "generate", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "exit status:" in text
    assert "11  the server does not support the operation" in text
    with pytest.raises(SystemExit) as info:
        main(["pixy"])
    assert info.value.code == ExitCode.USAGE
