"""`pollkit run jobs.jsonl`: a batch from a file of specs, resumable through its journal."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pollkit.batch._jsonl import read_batch
from pollkit.batch._scheduler import BatchItem
from pollkit.batch.journal._open import postgres_journal
from pollkit.batch.journal._pg_schema import is_postgres_url
from pollkit.cli._common import ExitCode, fail, key_from, run_until_interrupted
from pollkit.client._async import AsyncClient
from pollkit.errors import (
    AmbiguousSubmit,
    AuthenticationError,
    ConfigurationError,
    JournalBusy,
    PollkitError,
)
from pollkit.models import Result
from pollkit.policies import Cadence
from pollkit.providers.base import Provider
from pollkit.providers.magichour import MagicHour
from pollkit.providers.pixy import Pixy
from pollkit.providers.pixyz import Pixyz
from pollkit.push._status_stream import StatusStream
from pollkit.push._webhooks import WebhookReceiver

#: The providers a batch file may name, by their --provider name.
PROVIDERS: dict[str, type[MagicHour | Pixy | Pixyz]] = {
    "magichour": MagicHour,
    "pixy": Pixy,
    "pixyz": Pixyz,
}

__all__ = ["PROVIDERS", "register"]

_EPILOG = """Each line of the file is one job, as JSON: the spec exactly as submit() takes it,
and an optional key that names the job in the journal:
  {"key": "fox-1", "spec": {"tool": "ai-image-generator", "image_count": 1,
                            "style": {"prompt": "a fox"}}}
  {"spec": {"process": "convert_file", "file": "part.step"}}            (--provider pixyz)
Magic Hour also takes its short form: {"endpoint": "ai-image-generator", "body": {...}}.
Bad lines are reported with their numbers before anything is sent.

The journal (default: DIR/.pollkit/journal.sqlite) records every job before it is submitted:
run the same command again after a crash or Ctrl-C and it resumes, submitting nothing twice.
One run at a time uses an SQLite journal: a second one refuses at once (exit 75). With
--journal postgresql://… (pip install 'pollkit[postgres]') the same command started several
times, on any machines, shares the batch: each runner claims jobs, heartbeats every --heartbeat
s, and loses its jobs to the others --lease s after its last heartbeat; see `pollkit batch
status`. Add --dask tcp://host:8786 (or --dask local:4, a LocalCluster of 4 worker processes)
and the batch runs on a Dask cluster, one runner per worker, this command drawing one bar and
reporting every job (pip install 'pollkit[dask]'; docs/guides/cluster.md). A submit answered
500, 502 or 504, or cut off after it was sent, may have created its job: Magic Hour cannot be
asked, so it is reported and sent again only with --resubmit-ambiguous. Submits that never left
(connection refused, DNS, TLS) and 429/503 answers are retried. When work is left undone the
summary ends with the command that finishes it.

--download-dir may be an fsspec URL (s3://bucket/run/, gs://…; pip install 'pollkit[fsspec]'
and the protocol's package): each file is verified in a local spool, then written there
without overwriting, and journaled with its URL. The store's own configuration applies (for
S3: AWS_* variables, AWS_ENDPOINT_URL for another server). The default journal is then in
the spool, ~/.cache/pollkit/spool/.

environment: each provider's key and URL variables stand in for --api-key and --base-url:
MAGIC_HOUR_API_KEY / MAGIC_HOUR_BASE_URL, PIXY_API_KEY / PIXY_BASE_URL (and PIXY_SSO_URL),
PIXYZ_API_KEY / PIXYZ_BASE_URL.

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
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="magichour")
    parser.add_argument("--base-url", default=None, help="API base URL (default: its variable)")
    parser.add_argument("--api-key", default=None, help="API key (default: its variable)")
    parser.add_argument(
        "--download-dir",
        required=True,
        help="where outputs go: a folder, or an fsspec URL (s3://bucket/run/; pollkit[fsspec])",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="submits/polls at once")
    parser.add_argument("--rate", type=float, default=None, help="most submits per second")
    parser.add_argument(
        "--journal", default=None, help="journal file (default: DIR/.pollkit/journal.sqlite)"
    )
    parser.add_argument("--no-journal", action="store_true", help="keep no journal")
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="with a postgresql:// journal: seconds between this runner's heartbeats",
    )
    parser.add_argument(
        "--join",
        action="store_true",
        help="with a postgresql:// journal: also report the jobs other runners finish",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=30.0,
        help="with a postgresql:// journal: seconds without a heartbeat before other runners"
        " take this runner's jobs",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="with a postgresql:// journal: run the batch on a Dask cluster, one runner per"
        " worker: a scheduler address (tcp://host:8786) or local:N (a LocalCluster of N"
        " workers, closed at the end); pip install 'pollkit[dask]'",
    )
    parser.add_argument("--timeout", type=float, default=None, help="deadline per job, seconds")
    parser.add_argument(
        "--resubmit-ambiguous",
        action="store_true",
        help="submit again jobs whose submit was in flight when a previous run stopped",
    )
    push = parser.add_mutually_exclusive_group()
    push.add_argument(
        "--status-stream",
        metavar="URL",
        help="follow this SSE status stream (the key sent as Bearer); poll only as a fallback",
    )
    push.add_argument(
        "--webhook",
        metavar="PORT",
        type=int,
        help="receive the API's webhooks on 127.0.0.1:PORT at /pollkit/webhook/SECRET, SECRET"
        " from $POLLKIT_WEBHOOK_SECRET (register that URL, behind your TLS proxy); poll only as"
        " a fallback",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=run)


async def _run(
    args: argparse.Namespace,
    provider: Provider,
    items: list[BatchItem],
    results: list[Result],
    api_key: str,
) -> None:
    journal: Any = False if args.no_journal else (args.journal or True)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    push: StatusStream | WebhookReceiver | None = None
    if args.status_stream:
        bearer = {"Authorization": f"Bearer {api_key}"}
        push = StatusStream(args.status_stream, headers=bearer)
    elif args.webhook is not None:
        secret = os.environ.get("POLLKIT_WEBHOOK_SECRET")
        if not secret:
            raise ConfigurationError("--webhook needs $POLLKIT_WEBHOOK_SECRET (the URL's secret)")
        push = WebhookReceiver(provider, port=args.webhook, secret=secret)
    if args.dask:
        await _run_on_cluster(args, provider, items, results, show)
        return
    async with contextlib.AsyncExitStack() as stack:
        if is_postgres_url(journal):
            settings = {"heartbeat": args.heartbeat, "lease": args.lease}
            journal = await stack.enter_async_context(postgres_journal(journal, **settings))
        client = await stack.enter_async_context(
            AsyncClient(provider, cadence=Cadence(), push=push)
        )
        async for result in client.run(
            items,
            download_directory=args.download_dir,
            journal=journal,
            concurrency=args.concurrency,
            rate=args.rate,
            timeout=args.timeout,
            resubmit_ambiguous=args.resubmit_ambiguous,
            progress=show,
            join=args.join,
        ):
            results.append(result)


async def _run_on_cluster(
    args: argparse.Namespace,
    provider: Provider,
    items: list[BatchItem],
    results: list[Result],
    show: bool,
) -> None:
    """The batch on a Dask cluster: this process drives, the workers run (pollkit.cluster)."""
    try:
        from pollkit.cluster import run_on_cluster
    except ImportError as exc:
        raise ConfigurationError(f"--dask needs Dask: pip install 'pollkit[dask]' ({exc})") from exc
    async for result in run_on_cluster(
        args.dask,
        items,
        provider=provider,  # its key reaches the workers inside Dask's messages, never a log
        journal=args.journal,
        download_directory=args.download_dir,
        concurrency=args.concurrency,
        rate=args.rate,
        timeout=args.timeout,
        resubmit_ambiguous=args.resubmit_ambiguous,
        heartbeat=args.heartbeat,
        lease=args.lease,
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
    files = sum(len(r.downloaded_paths) + len(r.destinations) for r in results)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"{len(results)} of {total} jobs finished: {parts or 'none'}; {files} files"]
    for result in [r for r in results if not r.ok][:20]:
        lines.append(f"  {result.key or result.job_id}: {_why(result)}")
    return "\n".join(lines)


def _finish_command(args: argparse.Namespace, *, resubmit: bool) -> str:
    """The command that goes on with this batch: the same one, without the key."""
    words = ["pollkit", "run", args.batch, "--download-dir", args.download_dir]
    if args.provider != "magichour":
        words += ["--provider", args.provider]
    if args.base_url is not None:
        words += ["--base-url", args.base_url]
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
        command += f"  (with your key: --api-key KEY or ${PROVIDERS[args.provider].ENV_API_KEY})"
    return command


def _undone(results: list[Result], total: int) -> tuple[bool, bool]:
    """(whether a rerun has work to do, whether it needs --resubmit-ambiguous)."""
    ambiguous = any(isinstance(r.error, AmbiguousSubmit) for r in results)
    # A job that ended in error or canceled is done; one the batch gave up on is not.
    left = len(results) < total or any(r.error is not None for r in results)
    return left or ambiguous, ambiguous


def run(args: argparse.Namespace) -> int:
    """Run `run`; see the epilog for the exit status."""
    kind = PROVIDERS[args.provider]
    args.given_api_key = args.api_key is not None
    if args.dask and not is_postgres_url(args.journal):
        return fail(
            "run",
            "--dask runs the batch's runners on the cluster's workers, which share it through"
            " PostgreSQL: add --journal postgresql://…",
            ExitCode.USAGE,
        )
    if args.dask and (args.join or args.status_stream or args.webhook is not None):
        return fail(
            "run", "--dask follows the whole batch already; no --join or push", ExitCode.USAGE
        )
    api_key = key_from(args.api_key, kind.ENV_API_KEY)
    results: list[Result] = []
    items: list[BatchItem] = []
    try:
        text = sys.stdin.read() if args.batch == "-" else Path(args.batch).read_text()
        # The specs are checked before the key: a bad file is reported even without one.
        items = read_batch(text, kind(api_key=api_key or "-", base_url=args.base_url))
        if not api_key:
            raise ConfigurationError(f"no API key: --api-key or ${kind.ENV_API_KEY}")
        provider = kind(api_key=api_key, base_url=args.base_url)
        run_until_interrupted(_run(args, provider, items, results, api_key))
    except OSError as exc:
        return fail("run", f"{args.batch}: {exc.strerror}", ExitCode.USAGE)
    except ConfigurationError as exc:
        return fail("run", exc, ExitCode.USAGE)
    except JournalBusy as exc:
        message = f"{exc}; nothing was sent. Wait for it to finish (or stop it), then run this"
        return fail("run", f"{message} command again", ExitCode.JOURNAL_BUSY)
    except KeyboardInterrupt:
        print(f"pollkit run: interrupted\n{_summary(results, len(items))}", file=sys.stderr)
        _, resubmit = _undone(results, len(items))
        print(
            f"run the same command again to resume: {_finish_command(args, resubmit=resubmit)}",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    except AuthenticationError as exc:
        finish = _finish_command(args, resubmit=False)
        return fail(
            "run", f"{exc}\nwith the right key, finish the batch with: {finish}", ExitCode.API_ERROR
        )
    except PollkitError as exc:
        return fail("run", exc, ExitCode.JOB_ERROR)
    if is_postgres_url(args.journal):
        # Several runners share the batch: this one reports the jobs it finished (all of
        # them with --join); the batch's own progress is `pollkit batch status`.
        whole = args.join or bool(args.dask)
        who = "the batch" if whole else "this runner"
        print(f"{who}: {_summary(results, len(items) if whole else len(results))}")
        return ExitCode.OK if all(r.ok for r in results) else ExitCode.JOB_ERROR
    print(_summary(results, len(items)))
    left, resubmit = _undone(results, len(items))
    if left:
        print(f"to finish the batch: {_finish_command(args, resubmit=resubmit)}")
    done = all(r.ok for r in results) and len(results) == len(items)
    return ExitCode.OK if done else ExitCode.JOB_ERROR
