"""The `pollkit` command. Each subcommand lives in its own module with a `register` function."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pollkit.cli._common import ExitCode

__all__ = ["ExitCode", "build_parser", "main"]

#: Subcommand → its module, in the order `pollkit --help` lists them. A command imports only
#: its own module: `pollkit download` does not load the simulator, the journal or the providers.
_COMMANDS = {
    "demo": "pollkit.cli.demo",
    "run": "pollkit.cli.run",
    "batch": "pollkit.cli.batch",
    "sim": "pollkit.cli.sim",
    "check-result": "pollkit.cli.check_result",
    "download": "pollkit.cli.download",
    "pixy": "pollkit.cli.pixy",
    "pixyz": "pollkit.cli.pixyz",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for every subcommand, or for `only` that one when it is named."""
    parser = argparse.ArgumentParser(
        prog="pollkit",
        description="Submit, poll and download long-running generation jobs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list and args_list[0] in _COMMANDS else None
    args = build_parser(command).parse_args(args_list)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return code
