"""`pollkit pixyz …`: the PiXYZ Scheduler command-line client, rebuilt on pollkit's engine.

Every subcommand of the original ``client.py`` (docs/apis/pixyz.md) with its flags, doing what the
original intended: ``version``, ``list``, ``doc``, ``jobs``, ``status``, ``details``,
``outputs``, ``download``, ``download_all``, ``exec``, ``process``, ``convert``, ``thumbnails``
and ``metadata``. The argument parser lives here, the commands in `pollkit.cli.pixyz.commands`.
"""

from __future__ import annotations

import argparse
from typing import Any

from pollkit.cli.pixyz.commands import BATCH_EXIT_CODES, COMMANDS
from pollkit.providers.pixyz import DEFAULT_BASE_URL

__all__ = ["register"]

_EPILOG = f"""The token (-t) may also come from the PIXYZ_API_KEY environment variable; it is
sent as x-api-key and never printed. Progress bars (uploads, waits, downloads) go to stderr.

watching: -w polls /jobs/UUID/details every --interval seconds (default 1) until SUCCESS,
FAILURE or REVOKED, or until --timeout seconds (default: no limit).

download_all: the server packs the archive on the first request and answers 425 until it is
ready; pollkit asks again every --interval seconds, 31 requests at most (pollkit's not-ready
cadence), then prints "The outputs packaging task job is running" and exits 0.

exit status: 0 done (also when a job ended in FAILURE, outside batch mode), 1 an error (HTTP
error, invalid -p JSON, a job that did not succeed in convert/thumbnails/metadata, a wait
that timed out), 2 bad usage. exec -b -w exits with the job's final status:
{", ".join(f"{k} {v}" for k, v in BATCH_EXIT_CODES.items())}, UNKNOWN or any other 17."""


def _token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--token", default=None, help="API key (default: $PIXYZ_API_KEY)")


def _job(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-j", "--job", required=True, metavar="UUID", help="the job uuid")


def _watching(parser: argparse.ArgumentParser, *, flag: bool = True) -> None:
    if flag:
        parser.add_argument("-w", "--wait", action="store_true", help="watch until finished")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls (default 1)"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop watching after this many seconds"
    )


def _submitting(parser: argparse.ArgumentParser, *, entry: bool = True) -> None:
    parser.add_argument("-p", "--params", default=None, metavar="JSON", help="params (object)")
    if entry:
        parser.add_argument("-e", "--entrypoint", default=None, help="entry point (main)")
    parser.add_argument("-q", "--queue", default=None, help="worker queue")
    parser.add_argument("-l", "--time-limit", type=int, default=None, help="seconds (3600)")
    parser.add_argument("-a", "--alias", default=None, help="job name")


def register(sub: Any) -> None:
    """Add the `pixyz` command family to the `pollkit` parser."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "pixyz",
        help="the PiXYZ Scheduler command-line client",
        description="Talk to a PiXYZ Scheduler API (or pollkit's simulator of it).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-u", "--url", default=DEFAULT_BASE_URL, help="API base URL")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars on stderr (default: on)",
    )
    cmds = parser.add_subparsers(dest="pixyz_command", metavar="SUBCOMMAND", required=True)
    add = cmds.add_parser

    add("version", help="print the client version")
    add("list", help="list the processes")
    _doc = add("doc", help="print a process's documentation")
    _doc.add_argument("-n", "--name", required=True, help="process name")
    _token(add("jobs", help="list every job"))
    status = add("status", help="a job's details; -w watches it")
    for command in (
        status,
        add("details", help="a job's details"),
        add("outputs", help="list outputs"),
    ):
        _token(command)
        _job(command)
    _watching(status)
    download = add("download", help="download one output file")
    download.add_argument("-f", "--file", required=True, help="the file in the job's outputs")
    download.add_argument("-o", "--output", required=True, metavar="DEST", help="where to save")
    download_all = add("download_all", help="download the zip of every output")
    download_all.add_argument("-o", "--output", required=True, metavar="DEST.zip")
    download_all.add_argument(
        "--interval", type=float, default=1.0, help="seconds between archive requests (1)"
    )
    for command in (download, download_all):
        _token(command)
        _job(command)

    run = add("exec", help="run a custom script")
    run.add_argument("-s", "--script", required=True, help="the Python script")
    run.add_argument("-r", "--result", action="store_true", help="print the details at the end")
    run.add_argument("-b", "--batch", action="store_true", help="batch mode (exit codes)")
    process = add("process", help="run a built-in process")
    process.add_argument("-n", "--name", required=True, help="process name")
    process.add_argument("-r", "--result", action="store_true", help="print the details")
    for command in (run, process):
        _token(command)
        command.add_argument("-i", "--input", default=None, help="input file")
        _submitting(command)
        _watching(command)
    convert = add("convert", help="convert a file (convert_file)")
    convert.add_argument("-o", "--output", default=None, metavar="OUT", help="save it here")
    thumbnails = add("thumbnails", help="render thumbnails (generate_thumbnails)")
    thumbnails.add_argument("-o", "--output", default=None, metavar="DIR", help="save here")
    metadata = add("metadata", help="compute metadata (generate_metadata)")
    metadata.add_argument("-o", "--output", default=None, metavar="FILE", help="write it here")
    for command in (convert, thumbnails, metadata):
        _token(command)
        command.add_argument("-i", "--input", required=True, help="input file")
        if command is not metadata:
            command.add_argument("-p", "--params", default=None, metavar="JSON")
        command.add_argument("-q", "--queue", default=None, help="worker queue")
        command.add_argument("-l", "--time-limit", type=int, default=None, help="seconds")
        command.add_argument("-a", "--alias", default=None, help="job name")
        _watching(command, flag=False)
    for name, command_parser in cmds.choices.items():
        command_parser.set_defaults(func=COMMANDS[name])
