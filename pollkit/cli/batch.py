"""`pollkit batch status --journal URL`: one view of a batch that several runners share."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pollkit.batch.journal import _pg_claims as claims
from pollkit.batch.journal._open import postgres_journal
from pollkit.batch.journal._pg_schema import PENDING, is_postgres_url
from pollkit.batch.journal._records import STATES
from pollkit.errors import ConfigurationError, PollkitError

_EPILOG = """\
Counts per state (pending: loaded, no submit begun yet), each runner (live while its lease
holds) with the jobs it holds and has finished, the oldest unfinished job, and the jobs stuck
with a runner that is gone (another runner takes them once it claims again).

exit status: 0 shown, 1 the journal could not be read, 2 bad usage."""


def register(sub: Any) -> None:
    """Add the `batch` subcommand (`batch status`)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "batch", help="look at a batch shared by runners (a postgresql:// journal)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="counts per state and per runner, the oldest unfinished job, what is stuck",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--journal", required=True, help="the batch's postgresql:// journal")
    status.add_argument("--watch", action="store_true", help="progress bars until it is done")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between views")
    status.set_defaults(func=run)


def render(view: claims.BatchView) -> str:
    """The view as lines of text."""
    total = sum(view.states.values())
    lines = [f"batch: {total} jobs, {total - view.unsettled} finished, {view.unsettled} open"]
    counts = ", ".join(f"{s} {view.states.get(s, 0)}" for s in (PENDING, *STATES))
    lines.append(f"states: {counts}")
    lines.append(f"runners: {len(view.runners)}")
    for rid, host, pid, live, holds, finished, refused, statements in view.runners:
        lines.append(
            f"  {rid}  {'live' if live else 'gone'}  holds {holds}, finished {finished},"
            f" refused writes {refused}, statements {statements}  (host {host}, pid {pid})"
        )
    if view.oldest is not None:
        key, state, since = view.oldest
        lines.append(f"oldest unfinished: {key} ({state}, loaded {since:%Y-%m-%d %H:%M:%S} UTC)")
    for key, state, owner in view.stuck:
        lines.append(f"stuck: {key} ({state}) with {owner or 'no runner'}, which is gone")
    return "\n".join(lines)


async def _show(args: argparse.Namespace) -> None:
    async with postgres_journal(args.journal) as journal:
        if not args.watch:
            print(render(await claims.view(journal)))
            return
        from tqdm import tqdm

        bar: Any = None
        while True:
            view = await claims.view(journal)
            total = sum(view.states.values())
            if bar is None:
                bar = tqdm(total=total, unit="job", desc="finished", file=sys.stderr)
            bar.total = total
            bar.n = total - view.unsettled
            bar.set_postfix_str(
                " ".join(f"{s}={view.states.get(s, 0)}" for s in (PENDING, *STATES))
                + f" runners={sum(1 for r in view.runners if r[3])}"
            )
            bar.refresh()
            if view.unsettled == 0:
                bar.close()
                print(render(view))
                return
            await asyncio.sleep(args.interval)


def run(args: argparse.Namespace) -> int:
    """Run `batch status`; see the epilog for the exit status."""
    try:
        if not is_postgres_url(args.journal):
            raise ConfigurationError(
                "batch status: --journal must be a postgresql:// URL (a shared journal)"
            )
        if args.interval <= 0:
            raise ConfigurationError(f"batch status: --interval must be > 0, got {args.interval}")
        asyncio.run(_show(args))
    except ConfigurationError as exc:
        print(f"pollkit batch: {exc}", file=sys.stderr)
        return 2
    except PollkitError as exc:
        print(f"pollkit batch: {exc}", file=sys.stderr)
        return 1
    return 0
