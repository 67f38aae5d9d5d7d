"""The `pollkit` command. Each subcommand lives in its own module with a `register` function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pollkit.cli import check_result as check_result
from pollkit.cli import demo as demo
from pollkit.cli import download as download
from pollkit.cli import pixy as pixy
from pollkit.cli import pixyz as pixyz
from pollkit.cli import run as run
from pollkit.cli import sim as sim

__all__ = ["main"]

_COMMANDS = (demo, run, sim, check_result, download, pixy, pixyz)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pollkit",
        description="Submit, poll and download long-running generation jobs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
