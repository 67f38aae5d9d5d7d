"""`pollkit download URL …`: the download engine for plain URLs, beside curl and aria2c."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pollkit.cli._common import ExitCode, fail
from pollkit.display._progress import NullProgress, ProgressSink, TqdmProgress
from pollkit.download._downloader import Downloader, SavedFile, fetch_urls
from pollkit.errors import ConfigurationError, PollkitError
from pollkit.policies import DownloadPolicy, RetryPolicy
from pollkit.transport._errors import redact_url
from pollkit.transport._http import Transport

__all__ = ["parse_rate", "read_url_list", "register"]

_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_rate(text: str) -> float:
    """Bytes per second from ``500k``, ``10M``, ``1.5G`` (powers of 1024) or a plain number.

    Raises:
        ConfigurationError: Not a positive rate.
    """
    match = _RATE.match(text.strip())
    rate = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if rate <= 0:
        raise ConfigurationError(f"--limit-rate: not a positive rate: {text!r}")
    return rate


def read_url_list(source: str) -> list[str]:
    """URLs from a file (``-`` for standard input): one per line; blank lines and ``#`` skipped.

    Raises:
        ConfigurationError: The file cannot be read.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ConfigurationError(f"-i {source}: {exc.strerror}") from exc
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def register(sub: Any) -> None:
    """Add the `download` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "download",
        help="download URLs with resume and verification",
        description=(
            "Download URLs concurrently into a directory: resumable (.part files continue with "
            "Range + If-Range, across runs), verified (length, and sha256 when the ETag holds "
            "one), retried on resets, truncations, stalls and 5xx. Prints '<sha256>  <path>' "
            "per saved file, as sha256sum does."
        ),
        epilog="exit status: 0 every file saved, 1 some file failed, 2 bad usage",
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="URLs to download")
    parser.add_argument(
        "-i", "--input", metavar="LIST", help="file of URLs, one per line (- for stdin)"
    )
    parser.add_argument("-d", "--dir", required=True, help="target directory (created if missing)")
    parser.add_argument(
        "-c", "--concurrency", type=int, default=8, help="files at once (default 8)"
    )
    parser.add_argument(
        "--existing",
        choices=("rename", "skip", "overwrite"),
        default="rename",
        help="when a different file has the name (default: rename the new one to 'name (1).ext')",
    )
    parser.add_argument("--retries", type=int, default=4, help="retries per file (default 4)")
    parser.add_argument(
        "--stall-timeout", type=float, default=30.0, help="seconds without a byte before retrying"
    )
    parser.add_argument("--limit-rate", metavar="RATE", help="total bandwidth cap, e.g. 10M")
    parser.add_argument("--extract", action="store_true", help="extract .zip files after download")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=run)


def _policies(args: argparse.Namespace) -> tuple[DownloadPolicy, RetryPolicy]:
    try:
        policy = DownloadPolicy(
            concurrency=args.concurrency,
            existing=args.existing,
            stall_timeout=args.stall_timeout,
            bandwidth=parse_rate(args.limit_rate) if args.limit_rate else None,
            extract_archives=args.extract,
        )
        return policy, RetryPolicy(max_attempts=args.retries + 1)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"--{first['loc'][0]}: {first['msg']}") from exc


async def _download(
    urls: list[str], args: argparse.Namespace, sink: ProgressSink
) -> list[SavedFile | PollkitError]:
    policy, retry = _policies(args)
    transport = Transport(
        retry=retry,
        max_connections=max(policy.concurrency, 1),
        max_connections_per_host=max(policy.concurrency, 1),
    )
    try:
        downloader = Downloader(transport, policy, progress=sink, retry=retry)
        for url in urls:
            if not url.lower().startswith(("http://", "https://")):
                raise ConfigurationError(f"not an http(s) URL: {redact_url(url)!r}")
        return await fetch_urls(downloader, urls, args.dir)
    finally:
        await transport.aclose()


def run(args: argparse.Namespace) -> int:
    """Run `download`; 0 when every file was saved."""
    try:
        urls = list(args.urls) + (read_url_list(args.input) if args.input else [])
        if not urls:
            raise ConfigurationError("no URL given (arguments or -i LIST)")
        show = sys.stderr.isatty() if args.progress is None else args.progress
        sink: ProgressSink = TqdmProgress(jobs=False, file=sys.stderr) if show else NullProgress()
        try:
            outcomes = asyncio.run(_download(urls, args, sink))
        finally:
            sink.close()
    except ConfigurationError as exc:
        return fail("download", exc, ExitCode.USAGE)
    failed = 0
    for url, outcome in zip(urls, outcomes, strict=True):
        if isinstance(outcome, SavedFile):
            print(f"{outcome.sha256}  {outcome.path}")
        else:
            failed += 1
            print(f"pollkit download: failed {redact_url(url)}: {outcome}", file=sys.stderr)
    if failed:
        print(f"pollkit download: {failed} of {len(urls)} files failed", file=sys.stderr)
    return ExitCode.JOB_ERROR if failed else ExitCode.OK
