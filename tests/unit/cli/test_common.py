"""The statuses every command shares, and the one mapping from errors to them."""

from __future__ import annotations

import pytest

from pollkit import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    DownloadError,
    NotFound,
    PollkitError,
    PollTimeout,
    UnsupportedOperation,
)
from pollkit.cli import ExitCode
from pollkit.cli._common import exit_code_for, key_from

API = {"status_code": 500, "server_message": None, "body": None, "headers": {}}


@pytest.mark.parametrize(
    ("error", "detailed", "plain"),
    [
        (ConfigurationError("bad"), ExitCode.USAGE, ExitCode.USAGE),
        (UnsupportedOperation("no"), ExitCode.UNSUPPORTED, ExitCode.USAGE),
        (PollTimeout(job_id="j", timeout=1.0, state=None), ExitCode.TIMEOUT, ExitCode.TIMEOUT),
        (DownloadError("cut", job_id="j"), ExitCode.DOWNLOAD_FAILED, ExitCode.DOWNLOAD_FAILED),
        (
            ConnectError("down", operation="get", job_id="j"),
            ExitCode.NETWORK_ERROR,
            ExitCode.NETWORK_ERROR,
        ),
        (
            AuthenticationError(**{**API, "status_code": 401}),
            ExitCode.AUTH_FAILED,
            ExitCode.API_ERROR,
        ),
        (NotFound(**{**API, "status_code": 404}), ExitCode.NOT_FOUND, ExitCode.API_ERROR),
        (APIError(**API), ExitCode.API_ERROR, ExitCode.API_ERROR),
        (PollkitError("other"), ExitCode.API_ERROR, ExitCode.API_ERROR),
    ],
)
def test_one_mapping_from_errors_to_statuses(
    error: BaseException, detailed: ExitCode, plain: ExitCode
) -> None:
    assert exit_code_for(error) is detailed
    assert exit_code_for(error, detailed=False) is plain


def test_the_statuses_keep_their_values() -> None:
    # Scripts test these numbers: a renumbering would break them silently.
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "JOB_ERROR": 1, "USAGE": 2, "JOB_CANCELED": 3, "TIMEOUT": 4,
        "NOT_FINISHED": 5, "API_ERROR": 6, "NETWORK_ERROR": 7, "DOWNLOAD_FAILED": 8,
        "AUTH_FAILED": 9, "NOT_FOUND": 10, "UNSUPPORTED": 11, "JOURNAL_BUSY": 75,
        "INTERRUPTED": 130,
    }  # fmt: skip
    assert ExitCode.COMPLETE is ExitCode.OK


def test_a_key_given_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_KEY", "from-env")
    assert key_from("given", "SOME_API_KEY") == "given"
    assert key_from(None, "SOME_API_KEY") == "from-env"
    monkeypatch.delenv("SOME_API_KEY")
    assert key_from(None, "SOME_API_KEY") == ""
