"""Chaos: thousands of jobs of every provider through the simulator's ``chaos`` scenario, and
the same batch on a calm server, in the same run.

    .venv/bin/python -m benchmarks.bench_chaos [--jobs 5000] [--seed 1] [--no-calm]
        [--write-readme]

The batch is the one of ``tests/e2e/test_chaos.py`` (``tests/e2e/chaos.py`` builds and checks it),
larger: Magic Hour images and videos, Pixy images and videos, PiXYZ jobs fetched file by file and as
extracted zip archives, one client per lane, all at once, against a simulator in a process of its
own. Lanes run in passes over their journal until no spec is left ambiguous (a submit that met a
500, 502, 504 or a reset after sending may have created a job: PiXYZ lanes look it up by its name,
the others report it instead of paying twice; the next pass submits it again, as
``pollkit run --resubmit-ambiguous`` would). Every result is then checked
against the simulator's record: outputs on disk byte for byte (sha256), failed and canceled jobs
reported as such, one job per spec, no ``.part`` file left.

The peer is the same batch, same seed and timings, on a calm server (every fault rate zero,
URLs valid for a day, archives packed in 20 simulated s, the chaos scenario's shortest): what the
faults cost in wall time and requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.batch_report import machine, write_section
from benchmarks.simprocess import SimProcess
from pollkit.sim import SCENARIOS, Scenario, Simulator
from pollkit.sim._app import dialect_urls
from tests.e2e.chaos import DRAWN_FAULTS, Report, build_lanes, run_all, table, verify

SECTION = "## Chaos: every provider through every fault"
# What the calm peer turns off; everything else (seed, clock, durations, sizes) is the same.
CALM = {
    "http_error_rate": 0.0,
    "api_reset_rate": 0.0,
    "rate_limit_rate": 0.0,
    "truncate_rate": 0.0,
    "reset_rate": 0.0,
    "stall_rate": 0.0,
    "slow_rate": 0.0,
    "failure_rate": 0.0,
    "cancel_rate": 0.0,
    "unknown_status_rate": 0.0,
    "url_ttl": 86400.0,
    "archive_delay": (20.0, 20.0),
}


class ScenarioProcess(SimProcess):
    """`SimProcess` for any `Scenario`, served by this module's ``--serve`` mode."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(time_scale=scenario.time_scale, seed=scenario.seed)
        module = "benchmarks.bench_chaos"
        self._argv = [sys.executable, "-m", module, "--serve", scenario.model_dump_json()]


async def _serve(scenario: Scenario) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Simulator(scenario, port=0) as sim:
        print(f"pollkit sim: serving {sim.url} api_key={sim.api_key}", flush=True)
        await stop.wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(scenario: Scenario, jobs: int) -> tuple[Report, float, float]:
    """Run the batch against `scenario` in a simulator process; the report, wall and CPU s."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp,
        ScenarioProcess(scenario) as sim,
    ):
        lanes = build_lanes(dialect_urls(sim.url), sim.api_key, jobs, Path(tmp))
        cpu = _cpu()
        wall = asyncio.run(run_all(lanes))
        cpu = _cpu() - cpu
        report = verify(lanes, sim.stats())
    return report, wall, cpu


def comparison(chaos: tuple[Report, float, float], calm: tuple[Report, float, float]) -> str:
    """The two runs side by side."""
    lines = [
        "| server | jobs | outcomes (complete / error / canceled) | faults injected "
        "| outputs verified | duplicates | problems | passes | wall s | client CPU s "
        "| requests / job |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, (report, wall, cpu) in (("chaos", chaos), ("calm", calm)):
        o = report.outcomes
        injected = sum(report.faults.get(kind, 0) for kind in DRAWN_FAULTS)
        lines.append(
            f"| {label} | {report.specs} | {o['complete']} / {o['error']} / {o['canceled']} "
            f"| {injected} | {report.files_verified} | {report.duplicates} "
            f"| {len(report.problems)} | {report.passes} | {wall:.1f} | {cpu:.1f} "
            f"| {report.requests / max(report.specs, 1):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-calm", action="store_true", help="skip the calm peer")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # a scenario as JSON: serve it
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(Scenario.model_validate_json(args.serve)))
        return
    chaos_scenario = SCENARIOS["chaos"].replace(seed=args.seed)
    started = time.perf_counter()
    chaos = measure(chaos_scenario, args.jobs)
    print(f"chaos: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    print(f"\n{table(chaos[0], chaos[1])}\n")
    for problem in chaos[0].problems[:20]:
        print(f"problem: {problem}")
    calm = None
    if not args.no_calm:
        calm = measure(chaos_scenario.replace(**CALM), args.jobs)
        print(f"{comparison(chaos, calm)}\n")
    print("\n".join(notes(chaos, calm)))
    if args.write_readme:
        write_section(SECTION, readme_section(args, chaos, calm))
        print(f"wrote {SECTION!r}", file=sys.stderr)


def readme_section(
    args: argparse.Namespace,
    chaos: tuple[Report, float, float],
    calm: tuple[Report, float, float] | None,
) -> str:
    """The README section: command, setup, machine, tables."""
    report, wall, _ = chaos
    command = (
        f".venv/bin/python -m benchmarks.bench_chaos --jobs {args.jobs} --seed {args.seed} "
        "--write-readme"
    )
    setup = (
        f"{args.jobs:,} specs over five lanes, one client each, all at once, against the "
        "simulator's `chaos` scenario in a process of its own (20× real time; API requests: 5% "
        "5xx, 2% resets, 1% start a burst of 3–6 consecutive 429s; download bodies: 3% truncated, "
        "2% reset, 2% stalled 1 s, 5% slowed to 256 KiB/s; URLs expire 30 simulated s (1.5 s) "
        "after issue; 5% of jobs fail, 2% are canceled, 5% show an unknown native status "
        "mid-render; PiXYZ archives answer 425 for 20–60 simulated s). The batch and its checks "
        "are `tests/e2e/chaos.py`, as in `tests/e2e/test_chaos.py` (1,000 jobs). Lanes run in "
        "passes "
        "over their journal until no submit is left ambiguous. Every completed job's outputs "
        "are checked by sha256 against the simulator's (PiXYZ archives: the extracted files), "
        "every failed or canceled job against the simulator's outcome (a canceled Pixy video "
        "reads `error`, docs/apis/pixy.md#status-map). `url_expired` and `archive_not_ready` "
        "count refusals that "
        "follow from the timings; the other faults were drawn. The calm peer: the same batch, "
        "seed and timings with every fault and failure off."
    )
    parts = [
        SECTION,
        "",
        f"```sh\n{command}\n```",
        "",
        setup,
        "",
        machine([("pollkit", "pollkit"), ("aiohttp", "aiohttp")]),
        "",
        table(report, wall),
    ]
    if calm is not None:
        parts += ["", comparison(chaos, calm)]
    parts += ["", *notes(chaos, calm)]
    return "\n".join(parts) + "\n"


def notes(
    chaos: tuple[Report, float, float], calm: tuple[Report, float, float] | None
) -> list[str]:
    """What the figures say, as bullets."""
    report, wall, _ = chaos
    gave_up = sum(report.first_pass_errors.values())
    why = ", ".join(f"{n} {reason}" for reason, n in report.first_pass_errors.most_common())
    absorbed = set(report.first_pass_errors) <= {"ambiguous submit"}
    lines = [
        f"- The first pass, a single `run` per lane, gave up on {gave_up} of {report.specs} specs "
        f"({why or 'none'})"
        + ("; polls and downloads absorbed every other fault within it" if absorbed else "")
        + f". The {report.passes - 1} passes after it resubmitted what was left and created "
        f"{report.duplicates} duplicate jobs.",
        f"- {report.faults.get('url_expired', 0)} download requests met an expired URL; each "
        "re-read its job for a fresh one.",
    ]
    if calm is not None:
        calm_report, calm_wall, _ = calm
        extra = (report.requests / report.specs) - (calm_report.requests / calm_report.specs)
        lines.append(
            f"- The faults cost {wall / calm_wall:.2f}× the calm run's wall time and "
            f"{extra:+.1f} requests per job."
        )
    return lines


if __name__ == "__main__":
    main()
