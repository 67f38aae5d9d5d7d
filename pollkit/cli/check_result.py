"""`pollkit check-result ID`: wait for one job and download its outputs, with an exit status a
pipeline can act on."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pydantic import ValidationError

from pollkit.cli._common import ExitCode, exit_code_for, fail, key_from
from pollkit.client._async import AsyncClient
from pollkit.errors import (
    ConfigurationError,
    PollkitError,
)
from pollkit.models import Result, Status
from pollkit.policies import Cadence, RetryPolicy
from pollkit.providers.magichour import DEFAULT_BASE_URL, MagicHour

__all__ = ["ExitCode", "register"]  # ExitCode: pollkit.cli._common's, for callers


_EPILOG = """exit status:
  0  the job completed (and its outputs were saved, unless --no-download)
  1  the job ended in error
  2  bad usage: invalid arguments, empty API key, malformed URL
  3  the job was canceled
  4  the deadline (--timeout) passed before the job finished
  5  --no-wait, and the job has not finished yet
  6  the API refused a request (bad key, unknown id, other 4xx/5xx after retries)
  7  no usable reply from the API (connection failure, timeout or a malformed
     reply, after retries)
  8  an output could not be downloaded or saved

The API key may also come from the MAGIC_HOUR_API_KEY environment variable."""

_BY_STATUS = {
    Status.COMPLETE: ExitCode.COMPLETE,
    Status.ERROR: ExitCode.JOB_ERROR,
    Status.CANCELED: ExitCode.JOB_CANCELED,
}


def register(sub: Any) -> None:
    """Add the `check-result` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "check-result",
        help="wait for a job and download its outputs",
        description="Read a job, wait until it finishes, and download its outputs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job_id", metavar="ID", help="the job (Magic Hour project) id")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="API base URL")
    parser.add_argument("--api-key", default=None, help="API key (default: $MAGIC_HOUR_API_KEY)")
    parser.add_argument(
        "--download-dir",
        default=".",
        help="where to save outputs (created if missing), or an fsspec URL (s3://bucket/run/)",
    )
    parser.add_argument("--kind", choices=("image", "video", "audio"), help="project kind")
    parser.add_argument(
        "--no-wait", action="store_true", help="read the job once instead of waiting"
    )
    parser.add_argument("--no-download", action="store_true", help="do not download outputs")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="first wait between polls in seconds (default 1; it grows up to --max-interval)",
    )
    parser.add_argument(
        "--max-interval", type=float, default=None, help="longest wait between polls (default 30)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="retries of a request after a transient failure (default 4)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=run)


def _summary(result: Result) -> dict[str, Any]:
    state = result.state
    return {
        "job_id": state.job_id,
        "status": state.status.value,
        "native_status": state.native_status,
        "error": str(state.error) if state.error else None,
        "polls": result.polls,
        "files": [*map(str, result.downloaded_paths), *result.destinations],
        "sha256": list(result.sha256),
    }


def _policies(args: argparse.Namespace) -> tuple[Cadence, RetryPolicy]:
    """The cadence and retry policy the flags ask for (pydantic checks the values)."""
    cadence: dict[str, float] = {}
    if args.poll_interval is not None:
        cadence["initial"] = args.poll_interval
        cadence["maximum"] = max(args.poll_interval, Cadence().maximum)
    if args.max_interval is not None:
        cadence["maximum"] = args.max_interval
    retry = {} if args.retries is None else {"max_attempts": args.retries + 1}
    try:
        return Cadence(**cadence), RetryPolicy(**retry)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


async def _check(args: argparse.Namespace, api_key: str) -> Result:
    cadence, retry = _policies(args)
    provider = MagicHour(api_key=api_key, base_url=args.base_url)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    async with AsyncClient(provider, cadence=cadence, retry=retry) as client:
        return await client.check_result(
            args.job_id,
            wait_for_completion=not args.no_wait,
            download_outputs=not args.no_download,
            download_directory=args.download_dir,
            kind=args.kind,
            timeout=args.timeout,
            progress=progress,
        )


def run(args: argparse.Namespace) -> int:
    """Run `check-result`; return its exit status."""
    api_key = key_from(args.api_key, MagicHour.ENV_API_KEY)
    try:
        result = asyncio.run(_check(args, api_key))
    except PollkitError as exc:
        return fail("check-result", exc, exit_code_for(exc, detailed=False))
    summary = _summary(result)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        line = f"job {summary['job_id']}: {summary['status']} after {result.polls} poll(s)"
        if summary["error"]:
            line += f" ({summary['error']})"
        print(line)
        for path in summary["files"]:
            print(path)
    if not result.state.is_terminal:
        return int(ExitCode.NOT_FINISHED)
    return int(_BY_STATUS[result.state.status])
