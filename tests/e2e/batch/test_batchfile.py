"""The JSONL batch format: one spec shape for every provider, and every line checked first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pollkit import ConfigurationError, MagicHour, Pixy, Pixyz
from pollkit.batch._jsonl import parse_record, read_batch
from pollkit.cli import main
from pollkit.providers.base import Provider
from pollkit.sim import Scenario, ThreadedSimulator
from tests.helpers import job_stats, sha256_file

MAGIC_HOUR = MagicHour(api_key="mhk_test", base_url="http://127.0.0.1:9")
PIXY = Pixy(api_key="pk_test", base_url="http://127.0.0.1:9")
PIXYZ = Pixyz(api_key="pz_test", base_url="http://127.0.0.1:9")
IMAGE = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "a fox"}}


@pytest.mark.parametrize(
    ("record", "item"),
    [
        ({"spec": IMAGE}, IMAGE),
        ({"key": "fox-1", "spec": IMAGE}, ("fox-1", IMAGE)),
        # The short form is the same spec, written apart.
        (
            {
                "endpoint": "ai-image-generator",
                "body": {"image_count": 1, "style": {"prompt": "a fox"}},
            },
            IMAGE,
        ),
        (
            {
                "key": "k",
                "endpoint": "ai-image-generator",
                "body": {k: v for k, v in IMAGE.items() if k != "tool"},
            },
            ("k", IMAGE),
        ),
    ],
)
def test_both_forms_give_the_spec_submit_takes(record: dict[str, Any], item: Any) -> None:
    assert parse_record(record, MAGIC_HOUR) == item
    # …and the provider builds the same request from it as from the Python spec.
    spec = item[1] if isinstance(item, tuple) else item
    assert MAGIC_HOUR.submit_request(spec) == MAGIC_HOUR.submit_request(IMAGE)


@pytest.mark.parametrize(
    ("provider", "record", "message"),
    [
        (
            MAGIC_HOUR,
            {"endpoint": "ai-image-generator", "body": {"tool": "face-swap"}},
            "'body' has a field 'tool', which would replace the endpoint",
        ),
        (MAGIC_HOUR, {"spec": IMAGE, "endpoint": "x"}, "unknown field 'endpoint' beside 'spec'"),
        (
            MAGIC_HOUR,
            {"endpoint": "ai-image-generator", "bdy": {}},
            "unknown field 'bdy' beside 'endpoint'",
        ),
        (
            MAGIC_HOUR,
            {"key": "k"},
            "a line needs 'spec' (what submit() takes), or Magic Hour's 'endpoint' and 'body'",
        ),
        (MAGIC_HOUR, {"spec": [1]}, "'spec' must be a JSON object"),
        (MAGIC_HOUR, {"spec": IMAGE, "key": ""}, "'key' must be a non-empty string"),
        (MAGIC_HOUR, {"spec": IMAGE, "key": 3}, "'key' must be a non-empty string"),
        (MAGIC_HOUR, {"endpoint": "", "body": {}}, "'endpoint' must name a create endpoint"),
        (
            MAGIC_HOUR,
            {"endpoint": "ai-image-generator", "body": []},
            "'body' must be a JSON object",
        ),
        (
            PIXYZ,
            {"endpoint": "jobs", "body": {}},
            "'endpoint' and 'body' are Magic Hour's short form; for pixyz write 'spec'",
        ),
        (PIXYZ, {"key": "k"}, "a line needs 'spec' (what submit() takes)"),
        (
            PIXYZ,
            {"spec": {"process": "sleep", "colour": "red"}},
            "pixyz spec: unknown key 'colour'",
        ),
        (PIXY, {"spec": {"kind": "image"}}, "pixy"),
    ],
)
def test_bad_records_name_what_is_wrong(provider: Provider, record: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_record(record, provider)
    assert message in str(info.value)


def test_every_bad_line_is_numbered_and_comments_are_skipped() -> None:
    lines = [
        "# a comment",
        json.dumps({"spec": IMAGE}),
        "",
        json.dumps({"endpoint": "ai-image-generator", "body": {"tool": "x"}}),
        "[]",
    ]
    with pytest.raises(ConfigurationError) as info:
        read_batch("\n".join(lines), MAGIC_HOUR)
    assert str(info.value).splitlines() == [
        "2 bad lines:",
        "  line 4: 'body' has a field 'tool', which would replace the endpoint",
        "  line 5: a line must be a JSON object",
    ]
    with pytest.raises(ConfigurationError, match="the batch has no job"):
        read_batch("# nothing\n\n", MAGIC_HOUR)


QUICK = Scenario(time_scale=1000.0, queue_delay=10.0, render_time=30.0)


@pytest.mark.parametrize(
    ("provider", "specs", "env"),
    [
        (
            "pixy",
            [
                {"type": "image", "engine": "photon_flash", "delineation": f"kite {i}"}
                for i in range(3)
            ],
            "PIXY",
        ),
        (
            "pixyz",
            [
                {
                    "process": "generate_thumbnails",
                    "file": "MODEL",
                    "params": {"width": 9 + i, "height": 5},
                }
                for i in range(3)
            ],
            "PIXYZ",
        ),
        ("magichour", [{**IMAGE, "style": {"prompt": f"fox {i}"}} for i in range(3)], "MAGIC_HOUR"),
    ],
)
def test_pollkit_run_takes_every_provider_with_its_variables(
    provider: str,
    specs: list[dict[str, Any]],
    env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tmp_path / "bracket.step"
    model.write_bytes(b"ISO-10303-21;" * 1000)
    specs = [{k: str(model) if v == "MODEL" else v for k, v in s.items()} for s in specs]
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(
        "".join(json.dumps({"key": f"k{i}", "spec": s}) + "\n" for i, s in enumerate(specs))
    )
    with ThreadedSimulator(QUICK) as sim:
        monkeypatch.setenv(f"{env}_API_KEY", sim.api_key)
        monkeypatch.setenv(f"{env}_BASE_URL", sim.urls[provider])
        argv = ["run", str(batch), "--provider", provider, "--download-dir", str(tmp_path / "out")]
        assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err
        jobs = sim.stats()["jobs"]
    assert "3 of 3 jobs finished: 3 complete" in capsys.readouterr().out
    assert len(jobs) == 3
    saved = sorted(
        p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".pollkit" not in p.parts
    )
    expected = sorted(
        o["sha256"] for job in jobs for o in job_stats({"jobs": jobs}, job["id"])["outputs"]
    )
    assert sorted(sha256_file(p) for p in saved) == expected


def test_pollkit_run_on_a_status_stream_polls_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "a kite"}}
    batch = tmp_path / "jobs.jsonl"
    batch.write_text("".join(json.dumps({"key": f"k{i}", "spec": spec}) + "\n" for i in range(4)))
    with ThreadedSimulator(Scenario(time_scale=50.0, seed=3, image_size=(8, 8))) as sim:
        monkeypatch.setenv("MAGIC_HOUR_API_KEY", sim.api_key)
        monkeypatch.setenv("MAGIC_HOUR_BASE_URL", sim.url)
        stream = sim.event_stream_url("magichour")
        argv = ["run", str(batch), "--download-dir", str(tmp_path / "out"), "--no-progress"]
        assert main([*argv, "--status-stream", stream]) == 0, capsys.readouterr().err
        jobs = sim.stats()["jobs"]
    assert "4 of 4 jobs finished: 4 complete" in capsys.readouterr().out
    assert [job["status_requests"] for job in jobs] == [0] * 4


def test_pollkit_run_webhook_needs_its_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "jobs.jsonl"
    spec = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "x"}}
    batch.write_text(json.dumps({"spec": spec}) + "\n")
    monkeypatch.setenv("MAGIC_HOUR_API_KEY", "mhk_test")
    argv = ["run", str(batch), "--download-dir", str(tmp_path), "--webhook", "0"]
    assert main(argv) == 2
    assert "POLLKIT_WEBHOOK_SECRET" in capsys.readouterr().err
