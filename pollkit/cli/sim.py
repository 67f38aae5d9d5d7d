"""`pollkit sim`: run the simulator in the foreground until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from pollkit.cli._common import ExitCode, fail

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``sim`` subcommand to the `pollkit` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="run the local API simulator",
        description=(
            "Serve pollkit's simulator of the vendors' job APIs until SIGINT or SIGTERM. "
            "The first line printed is 'pollkit sim: serving <url> api_key=<key>'; then one "
            "line per API: 'pollkit sim: <api> at <base url>'."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--api-key", default=None, help="accepted API key (default: random)")
    parser.add_argument("--scenario", default="default", help="named scenario (default: default)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    parser.add_argument(
        "--time-scale", type=float, default=None, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--video-bytes",
        type=int,
        default=None,
        help="size of each generated video file, in bytes (default: the scenario's)",
    )
    parser.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> int:
    from pollkit.sim import SCENARIOS, Simulator

    if args.scenario not in SCENARIOS:
        known = ", ".join(sorted(SCENARIOS))
        return fail("sim", f"unknown scenario {args.scenario!r} (known: {known})", ExitCode.USAGE)
    changes: dict[str, Any] = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.time_scale is not None:
        changes["time_scale"] = args.time_scale
    if args.video_bytes is not None:
        changes["video_bytes"] = args.video_bytes
    try:
        scenario = SCENARIOS[args.scenario].replace(**changes)
    except ValueError as exc:
        return fail("sim", exc, ExitCode.USAGE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows event loops; Ctrl-C then arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with Simulator(scenario, api_key=args.api_key, host=args.host, port=args.port) as sim:
            print(f"pollkit sim: serving {sim.url} api_key={sim.api_key}", flush=True)
            for dialect, url in sim.urls.items():
                print(f"pollkit sim: {dialect} at {url}", flush=True)
            await stop.wait()
    except OSError as exc:
        where = f"cannot listen on {args.host}:{args.port}: {exc}"
        return fail("sim", where, ExitCode.JOB_ERROR)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status (0 after a clean stop)."""
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return ExitCode.OK
