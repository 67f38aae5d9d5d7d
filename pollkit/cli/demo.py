"""`pollkit demo`: a mixed batch against the embedded simulator, end to end."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pollkit.cli._common import ExitCode, fail
from pollkit.client._async import AsyncClient
from pollkit.display._progress import TqdmProgress
from pollkit.models import Result
from pollkit.policies import Cadence
from pollkit.providers.magichour import MagicHour

__all__ = ["demo_specs", "register"]

_PROMPTS = (
    "a lighthouse in a thunderstorm",
    "a paper boat drifting down a gutter",
    "a fox reading a newspaper",
    "neon koi in a night market",
    "a glacier calving at dawn",
    "a robot watering tomatoes",
)


def demo_specs(count: int) -> list[dict[str, Any]]:
    """`count` Magic Hour specs cycling through an image job (1 or 2 images), a text-to-video
    job and an animation job."""
    specs: list[dict[str, Any]] = []
    for i in range(count):
        base = {"name": f"demo-{i}"}
        prompt = _PROMPTS[i % len(_PROMPTS)]
        if i % 3 == 0:
            spec = {
                "tool": "ai-image-generator",
                "image_count": 1 + i % 2,
                "style": {"prompt": prompt},
            }
        elif i % 3 == 1:
            spec = {"tool": "text-to-video", "end_seconds": 5, "style": {"prompt": prompt}}
        else:
            spec = {
                "tool": "animation",
                "fps": 12,
                "end_seconds": 3,
                "width": 512,
                "height": 512,
                "style": {
                    "art_style": "Painterly Illustration",
                    "camera_effect": "Simple Zoom In",
                    "prompt_type": "custom",
                    "prompt": prompt,
                    "transition_speed": 5,
                },
                "assets": {"audio_source": "none"},
            }
        specs.append(base | spec)
    return specs


def register(sub: Any) -> None:
    """Add the `demo` subcommand."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run a demo batch against the embedded simulator",
        description=(
            "Start the embedded simulator, submit a mixed batch of image and video jobs (a few "
            "of them fail or are canceled on purpose), wait for them with progress bars, "
            "download the outputs and print a summary."
        ),
    )
    parser.add_argument("--jobs", type=int, default=12, help="how many jobs (default 12)")
    parser.add_argument("--out", default="pollkit-demo", help="download directory")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="simulated seconds per real second (default: the demo scenario's, jobs take 1–4 s)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars on stderr",
    )
    parser.set_defaults(func=run)


async def _demo(args: argparse.Namespace) -> list[tuple[str, Result]]:
    # Imported here: every other command would otherwise pay for loading the simulator.
    from pollkit.sim import SCENARIOS, Simulator

    out = Path(args.out)
    # Outcomes are planned below, so that the demo shows exactly the failures it announces.
    demo = SCENARIOS["demo"]
    scenario = demo.model_copy(
        update={
            "seed": args.seed,
            "time_scale": args.time_scale or demo.time_scale,
            "failure_rate": 0.0,
        }
    )
    specs = demo_specs(args.jobs)
    async with Simulator(scenario) as sim:
        # Every fifth job fails and every seventh is canceled. Submits go one at a time, in
        # order, so each plan meets the job it was meant for.
        for i in range(len(specs)):
            outcome = "error" if i % 5 == 3 else "canceled" if i % 7 == 5 else "complete"
            sim.plan_next(outcome=outcome)
        provider = MagicHour(api_key=sim.api_key, base_url=sim.url)
        cadence = Cadence(initial=0.25, maximum=1.0, timeout=120)
        sink = TqdmProgress(file=sys.stderr, disable=not args.progress)
        try:
            async with AsyncClient(provider, cadence=cadence, seed=args.seed) as client:
                items = [(f"demo-{i}", spec) for i, spec in enumerate(specs)]
                finished = {
                    result.key: result
                    async for result in client.run(
                        items,
                        download_directory=out,
                        concurrency=1,
                        # Each demo has a fresh simulator whose job ids repeat: nothing to resume.
                        journal=False,
                        progress=sink,
                    )
                }
        finally:
            sink.close()
    return [(str(spec["tool"]), finished[f"demo-{i}"]) for i, spec in enumerate(specs)]


def _table(rows: list[tuple[str, Result]], out: Path) -> str:
    header = ("job", "tool", "status", "polls", "files")
    lines = []
    for tool, result in rows:
        status = result.status.value
        if result.error is not None:
            status = f"failed: {result.error}"
        elif result.state.error:
            status += f" ({result.state.error.message})"
        count = str(len(result.downloaded_paths))
        lines.append((result.job_id or "-", tool, status, str(result.polls), count))
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    saved = sum(len(r.downloaded_paths) for _, r in rows)
    text = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    text += [fmt.format(*line) for line in lines]
    text.append(f"\n{len(rows)} jobs, {saved} files in {out.resolve()}")
    return "\n".join(text)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every job ended as planned and every output was saved."""
    if args.jobs < 1 or (args.time_scale is not None and args.time_scale <= 0):
        return fail("demo", "--jobs must be ≥ 1 and --time-scale > 0", ExitCode.USAGE)
    rows = asyncio.run(_demo(args))
    print(_table(rows, Path(args.out)))
    # Failed and canceled jobs are part of the show; a batch that gave up on a job is not.
    return ExitCode.JOB_ERROR if any(r.error is not None for _, r in rows) else ExitCode.OK
