"""`pollkit run jobs.jsonl`: a batch from a file of specs, resumable through its journal."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pollkit.client import AsyncClient
from pollkit.errors import (
    AmbiguousSubmit,
    AuthenticationError,
    ConfigurationError,
    JournalBusy,
    PollkitError,
)
from pollkit.models import Result
from pollkit.policies import Cadence
from pollkit.providers.magichour import DEFAULT_BASE_URL, MagicHour
from pollkit.scheduler import BatchItem

__all__ = ["read_batch", "register"]

_EPILOG = """Each line of the file is one job, as JSON. For Magic Hour:
  {"endpoint": "ai-image-generator", "body": {"image_count": 1, "style": {"prompt": "a fox"}},
   "key": "optional-unique-key"}
with any create endpoint. Bad lines are reported with their numbers before anything is sent.

The journal (default: DIR/.pollkit/journal.sqlite) records every job before it is submitted:
run the same command again after a crash or Ctrl-C and it resumes, submitting nothing twice.
One run at a time uses a journal: a second one refuses at once (exit 75). A submit answered
500, 502 or 504, or cut off after it was sent, may have created its job: Magic Hour cannot be
asked, so it is reported and sent again only with --resubmit-ambiguous. Submits that never
left (connection refused, DNS, TLS) and 429/503 answers are retried. When work is left undone
the summary ends with the command that finishes it.

environment: MAGIC_HOUR_API_KEY and MAGIC_HOUR_BASE_URL stand in for --api-key and --base-url.

exit status: 0 every job completed and its files were saved, 1 some job failed, was canceled,
timed out or was not submitted, 2 bad usage or a bad line, 6 the API refused the key, 75 another
run is using the journal (try again later), 130 interrupted."""


def register(sub: Any) -> None:
    """Add the `run` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run a batch of jobs from a JSONL file",
        description="Submit every job of a JSONL file, wait for them and download their outputs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("batch", metavar="JOBS.jsonl", help="one JSON spec per line (- for stdin)")
    parser.add_argument("--provider", choices=("magichour",), default="magichour")
    parser.add_argument("--base-url", default=None, help="API base URL ($MAGIC_HOUR_BASE_URL)")
    parser.add_argument("--api-key", default=None, help="API key ($MAGIC_HOUR_API_KEY)")
    parser.add_argument("--download-dir", required=True, help="where outputs go")
    parser.add_argument("--concurrency", type=int, default=16, help="submits/polls at once")
    parser.add_argument("--rate", type=float, default=None, help="most submits per second")
    parser.add_argument(
        "--journal", default=None, help="journal file (default: DIR/.pollkit/journal.sqlite)"
    )
    parser.add_argument("--no-journal", action="store_true", help="keep no journal")
    parser.add_argument("--timeout", type=float, default=None, help="deadline per job, seconds")
    parser.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again jobs whose submit was in flight when a previous run stopped",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=run)


def read_batch(text: str, provider: MagicHour) -> list[BatchItem]:
    """Parse and check every line; return (key, spec) items.

    Raises:
        ConfigurationError: Naming every bad line (up to 20) with its number.
    """
    items: list[BatchItem] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ConfigurationError("a line must be a JSON object")
            unknown = set(record) - {"endpoint", "body", "key"}
            if unknown:
                raise ConfigurationError(f"unknown fields {sorted(unknown)}")
            endpoint, body, key = record.get("endpoint"), record.get("body", {}), record.get("key")
            if not isinstance(endpoint, str) or not endpoint:
                raise ConfigurationError("'endpoint' must name a create endpoint")
            if not isinstance(body, dict):
                raise ConfigurationError("'body' must be a JSON object")
            if key is not None and (not isinstance(key, str) or not key):
                raise ConfigurationError("'key' must be a non-empty string")
            spec = {"tool": endpoint, **body}
            provider.submit_request(spec)  # checks the spec; sends nothing
        except (ValueError, ConfigurationError) as exc:
            problems.append(f"line {number}: {exc}")
            continue
        items.append((key, spec) if key else spec)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConfigurationError(f"{len(problems)} bad lines:\n  {shown}{more}")
    if not items:
        raise ConfigurationError("the batch has no job")
    return items


async def _run(args: argparse.Namespace, items: list[BatchItem], results: list[Result]) -> None:
    provider = MagicHour(api_key=args.api_key, base_url=args.base_url)
    journal: Any = False if args.no_journal else (args.journal or True)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    async with AsyncClient(provider, cadence=Cadence()) as client:
        async for result in client.run(
            items,
            download_directory=args.download_dir,
            journal=journal,
            concurrency=args.concurrency,
            rate=args.rate,
            timeout=args.timeout,
            resubmit_ambiguous=args.resubmit_ambiguous,
            progress=show,
        ):
            results.append(result)


def _why(result: Result) -> str:
    """Why a job is not ok, in the command line's terms."""
    error = result.error
    if isinstance(error, AmbiguousSubmit):
        if error.can_look_up:
            advice = "looking it up did not tell"
        else:
            advice = f"{error.provider} cannot be asked whether the job exists"
        return (
            f"its submit may have created a job ({error.reason}); {advice}: add"
            " --resubmit-ambiguous to submit it again (it may be paid twice)"
        )
    return str(error or result.state.error or result.status.value)


def _summary(results: list[Result], total: int) -> str:
    counts = Counter(
        "timed out"
        if r.error is not None and r.state.status.is_terminal is False
        else r.status.value
        for r in results
    )
    files = sum(len(r.downloaded_paths) for r in results)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"{len(results)} of {total} jobs finished: {parts or 'none'}; {files} files"]
    for result in [r for r in results if not r.ok][:20]:
        lines.append(f"  {result.key or result.job_id}: {_why(result)}")
    return "\n".join(lines)


def _finish_command(args: argparse.Namespace, *, resubmit: bool) -> str:
    """The command that goes on with this batch: the same one, without the key."""
    words = ["pollkit", "run", args.batch, "--download-dir", args.download_dir]
    if args.given_base_url is not None:
        words += ["--base-url", args.given_base_url]
    if args.journal is not None:
        words += ["--journal", args.journal]
    if args.no_journal:
        words.append("--no-journal")
    if args.concurrency != 16:
        words += ["--concurrency", str(args.concurrency)]
    for flag, value in (("--rate", args.rate), ("--timeout", args.timeout)):
        if value is not None:
            words += [flag, f"{value:g}"]
    if resubmit or args.resubmit_ambiguous:
        words.append("--resubmit-ambiguous")
    command = shlex.join(words)
    if args.given_api_key:
        # Never printed: the key is given again the way the user gave it.
        command += "  (with your key: --api-key KEY or $MAGIC_HOUR_API_KEY)"
    return command


def _undone(results: list[Result], total: int) -> tuple[bool, bool]:
    """(whether a rerun has work to do, whether it needs --resubmit-ambiguous)."""
    ambiguous = any(isinstance(r.error, AmbiguousSubmit) for r in results)
    # A job that ended in error or canceled is done; one the batch gave up on is not.
    left = len(results) < total or any(r.error is not None for r in results)
    return left or ambiguous, ambiguous


def run(args: argparse.Namespace) -> int:
    """Run `run`; see the epilog for the exit status."""
    args.given_api_key = args.api_key is not None
    args.given_base_url = args.base_url
    args.api_key = args.api_key or os.environ.get("MAGIC_HOUR_API_KEY", "")
    args.base_url = args.base_url or os.environ.get("MAGIC_HOUR_BASE_URL", DEFAULT_BASE_URL)
    results: list[Result] = []
    items: list[BatchItem] = []
    try:
        text = sys.stdin.read() if args.batch == "-" else Path(args.batch).read_text()
        items = read_batch(text, MagicHour(api_key=args.api_key or "-", base_url=args.base_url))
        if not args.api_key:
            raise ConfigurationError("no API key: --api-key or $MAGIC_HOUR_API_KEY")
        asyncio.run(_run(args, items, results))
    except OSError as exc:
        print(f"pollkit run: {args.batch}: {exc.strerror}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"pollkit run: {exc}", file=sys.stderr)
        return 2
    except JournalBusy as exc:
        print(
            f"pollkit run: {exc}; nothing was sent. Wait for it to finish (or stop it), then"
            " run this command again",
            file=sys.stderr,
        )
        return 75
    except KeyboardInterrupt:
        print(f"pollkit run: interrupted\n{_summary(results, len(items))}", file=sys.stderr)
        _, resubmit = _undone(results, len(items))
        print(
            f"run the same command again to resume: {_finish_command(args, resubmit=resubmit)}",
            file=sys.stderr,
        )
        return 130
    except AuthenticationError as exc:
        print(f"pollkit run: {exc}", file=sys.stderr)
        print(
            f"with the right key, finish the batch with: {_finish_command(args, resubmit=False)}",
            file=sys.stderr,
        )
        return 6
    except PollkitError as exc:
        print(f"pollkit run: {exc}", file=sys.stderr)
        return 1
    print(_summary(results, len(items)))
    left, resubmit = _undone(results, len(items))
    if left:
        print(f"to finish the batch: {_finish_command(args, resubmit=resubmit)}")
    return 0 if all(r.ok for r in results) and len(results) == len(items) else 1
