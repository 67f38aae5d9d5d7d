"""Downloads: pollkit vs curl, aria2c and the official magic-hour SDK, from the same local server.

    .venv/bin/python -m benchmarks.bench_download [--runs 5] [--sets 1mb,50mb,1gb]
        [--servers nginx,sim] [--tools pollkit,curl,aria2c,sdk] [--timeout 300] [--write-readme]

The same sets of files (200 × 1 MB, 20 × 50 MB, 1 × 1 GB; MB = 10^6 bytes) are fetched from
one local server — nginx on the simulator's blobs written to disk for the run (skipped when
nginx is not installed), then the simulator's ``/_sim/blobs`` in a process of its own — by each
client in a child process of its own, 16 transfers at a time:

- ``pollkit download -i LIST --dir DIR --concurrency 16 --no-progress``
- ``curl -q --parallel --parallel-max 16 -s -K CONFIG`` (``-q``: no ~/.curlrc)
- ``aria2c --no-conf -j16 -x1 -q --allow-overwrite=true --auto-file-renaming=false -d DIR -i LIST``
- the SDK's ``download_files_async`` (``benchmarks/dl_sdk.py``), one file at a time, each held
  whole in memory.

Throughput is the set's bytes over the client's wall time (start-up included), median of the
runs; CPU is the client's user + system seconds (median); peak RSS is the largest of its runs
(``wait4`` on that child alone, see ``dl_launch.py``). Clients take turns run by run, so drift
on a shared machine touches all of them. Before each run the target directory is emptied and
dirty pages are synced; after it every file is checked by sha256 against the source, and a
client that failed or timed out once gets no figure (and is not run again on that set). With
``--write-readme`` the tables replace the section of ``benchmarks/README.md`` named below.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.batch_report import checkout_commit, describe_machine
from benchmarks.dl_clients import Tool, find_tools, measure
from benchmarks.dl_servers import Blob, FileSet, Nginx, Server, Simulator, nginx_version

SETS = {
    s.key: s
    for s in (
        FileSet("1mb", count=200, size=10**6),
        FileSet("50mb", count=20, size=50 * 10**6),
        FileSet("1gb", count=1, size=10**9),
    )
}
TOOLS = ("pollkit", "curl", "aria2c", "sdk")
SERVERS = ("nginx", "sim")
LABELS = {"sdk": "magic-hour SDK"}

#: pollkit's targets: at least this share of curl's throughput per set, at least aria2c's on
#: every set, and a peak RSS that grows by at most RSS_TARGET from the 1 MB to the 1 GB set.
CURL_TARGET = {"1mb": 0.6, "50mb": 0.85, "1gb": 0.85}
RSS_TARGET = 30 * 10**6

SECTION = "## Downloads vs curl, aria2c and the SDK"
README = Path(__file__).with_name("README.md")
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sample:
    mbps: float
    cpu: float
    rss: int
    wall: float
    size: int


@dataclass
class Cell:
    """Every run of one tool on one set from one server."""

    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.samples)

    @property
    def mbps(self) -> float:
        return statistics.median(s.mbps for s in self.samples)

    def net_mbps(self, start: float) -> float:
        """Median throughput once the tool's start-up (`start` seconds) is taken out."""
        return statistics.median(s.size / max(s.wall - start, 1e-3) / 1e6 for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    @property
    def rss(self) -> int:
        return max(s.rss for s in self.samples)


Cells = dict[tuple[str, str], Cell]  # (set key, tool name) → runs
Starts = dict[str, float]  # tool name → wall seconds of a run with nothing to download


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _empty(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()


def _check(target: Path, blobs: Sequence[Blob]) -> str | None:
    """Why the files in `target` are not exactly `blobs` (names aside), or None."""
    files = [p for p in target.iterdir() if p.is_file()]
    found = Counter(_sha256(p) for p in files)
    missing = Counter(b.sha256 for b in blobs) - found
    if missing:
        count = sum(missing.values())
        return f"{count} of {len(blobs)} files missing or not byte-exact ({len(files)} on disk)"
    if len(files) > len(blobs):
        extra = sorted(p.name for p in files if p.name not in {b.name for b in blobs})
        print(f"    note: {len(files) - len(blobs)} extra file(s) left, e.g. {extra[:3]}")
    return None


def _run_once(tool: Tool, blobs: Sequence[Blob], workdir: Path, timeout: float) -> Sample | str:
    target = workdir / "out"
    _empty(target)
    argv = tool.command(blobs, target, workdir)
    os.sync()  # the previous run's write-back must not land in this one
    run = measure(argv, timeout=timeout)
    try:
        if run.timed_out:
            return f"timeout ({timeout:g} s)"
        if run.exit_code != 0:
            last = run.stderr.splitlines()[-1] if run.stderr else "no message"
            return f"exit {run.exit_code}: {last[:120]}"
        problem = _check(target, blobs)
        if problem:
            return problem
    finally:
        _empty(target)
    total = sum(b.size for b in blobs)
    return Sample(
        mbps=total / run.wall / 1e6, cpu=run.cpu, rss=run.max_rss, wall=run.wall, size=total
    )


def bench_server(
    server: Server,
    sets: Sequence[FileSet],
    tools: Sequence[Tool],
    *,
    runs: int,
    timeout: float,
    workdir: Path,
) -> Cells:
    """Every tool on every set from one server, `runs` times, taking turns."""
    cells: Cells = {}
    for files in sets:
        blobs = server.publish(files)
        try:
            for run in range(runs):
                shift = run % len(tools)
                for tool in [*tools[shift:], *tools[:shift]]:
                    cell = cells.setdefault((files.key, tool.name), Cell())
                    if cell.failure:
                        continue
                    outcome = _run_once(tool, blobs, workdir, timeout)
                    head = f"  {files.key:>5} run {run + 1}/{runs} {tool.name:<8}"
                    if isinstance(outcome, str):
                        cell.failure = outcome
                        print(f"{head} FAILED: {outcome}", flush=True)
                    else:
                        cell.samples.append(outcome)
                        print(
                            f"{head} {outcome.mbps:7.0f} MB/s  cpu {outcome.cpu:6.2f} s  "
                            f"rss {outcome.rss / 1e6:6.0f} MB",
                            flush=True,
                        )
        finally:
            server.unpublish()
    return cells


def _ratio(cells: Cells, key: str, tool: str, peer: str, starts: Starts | None) -> float | None:
    """`tool`'s throughput over `peer`'s on one set; with `starts`, each without its start-up."""
    ours, theirs = cells.get((key, tool)), cells.get((key, peer))
    if ours is None or theirs is None or not ours.ok or not theirs.ok:
        return None
    if starts is None:
        return ours.mbps / theirs.mbps
    return ours.net_mbps(starts.get(tool, 0.0)) / theirs.net_mbps(starts.get(peer, 0.0))


def _verdict(key: str, cells: Cells, starts: Starts) -> str:
    """pollkit's throughput targets on one set, counting its start-up and not counting it."""
    ours = cells[(key, "pollkit")]
    if not ours.ok:
        return "missed (no figure)"
    verdicts = []
    for label, table in (("with start-up", None), ("engine", starts)):
        checks = []
        vs_curl = _ratio(cells, key, "pollkit", "curl", table)
        if vs_curl is not None:
            checks.append((vs_curl >= CURL_TARGET[key], f"{vs_curl:.2f}× curl"))
        vs_aria = _ratio(cells, key, "pollkit", "aria2c", table)
        if vs_aria is not None:
            checks.append((vs_aria >= 1, f"{vs_aria:.2f}× aria2c"))
        if not checks:
            return "n/a (no peer)"
        missed = [why for met, why in checks if not met]
        verdicts.append(f"{label}: **missed** ({', '.join(missed)})" if missed else f"{label}: met")
    return "; ".join(verdicts)


def _rss_verdict(cells: Cells) -> str | None:
    small, big = cells.get(("1mb", "pollkit")), cells.get(("1gb", "pollkit"))
    if small is None or big is None or not small.ok or not big.ok:
        return None
    growth = big.rss - small.rss
    met = "met" if abs(growth) <= RSS_TARGET else "**missed**"
    return (
        f"pollkit's peak RSS: {big.rss / 1e6:.0f} MB on 1 × 1 GB, {small.rss / 1e6:.0f} MB on "
        f"200 × 1 MB: {growth / 1e6:+.0f} MB (target: within {RSS_TARGET / 1e6:g} MB): {met}."
    )


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(
    cells: Cells, sets: Sequence[FileSet], tools: Sequence[Tool], starts: Starts
) -> list[str]:
    """One server's results as Markdown lines: a table, then pollkit's targets."""
    columns = ["set", "tool", "MB/s, median (min–max)", "× curl", "× aria2c"]
    columns += ["MB/s without start-up", "× curl", "× aria2c", "CPU s", "peak RSS MB", "target"]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for files in sets:
        key = files.key
        for tool in tools:
            cell = cells[(key, tool.name)]
            target = _verdict(key, cells, starts) if tool.name == "pollkit" else ""
            name = LABELS.get(tool.name, tool.name)
            if not cell.ok:
                failure = (cell.failure or "no run").replace("|", "\\|")
                lines.append(f"| {files.label} | {name} | {failure} |" + " |" * 7 + f" {target} |")
                continue
            low, high = min(s.mbps for s in cell.samples), max(s.mbps for s in cell.samples)
            gross = [_ratio(cells, key, tool.name, peer, None) for peer in ("curl", "aria2c")]
            net = [_ratio(cells, key, tool.name, peer, starts) for peer in ("curl", "aria2c")]
            lines.append(
                f"| {files.label} | {name} | {cell.mbps:.0f} ({low:.0f}–{high:.0f}) "
                f"| {_fmt(gross[0], '.2f')} | {_fmt(gross[1], '.2f')} "
                f"| {cell.net_mbps(starts.get(tool.name, 0.0)):.0f} "
                f"| {_fmt(net[0], '.2f')} | {_fmt(net[1], '.2f')} "
                f"| {cell.cpu:.2f} | {cell.rss / 1e6:.0f} | {target} |"
            )
    rss = _rss_verdict(cells)
    if rss:
        lines += ["", f"- {rss}"]
    return lines


def startup(tools: Sequence[Tool], workdir: Path) -> tuple[str, Starts]:
    """Each tool's wall time on an empty list (median of 3 after one to warm caches up)."""
    target = workdir / "out"
    starts: Starts = {}
    for tool in tools:
        _empty(target)
        argv = tool.command([], target, workdir)
        walls = [measure(argv, timeout=60).wall for _ in range(4)][1:]
        starts[tool.name] = statistics.median(walls)
    figures = ", ".join(f"{LABELS.get(n, n)} {v:.2f}" for n, v in starts.items())
    return f"Start-up alone (wall s on an empty list, median of 3): {figures}.", starts


def machine(tools: Sequence[Tool], with_nginx: bool) -> str:
    """Date, cores, CPU, kernel and every version involved, in one line."""
    versions = []
    for tool in tools:
        commit = f" ({checkout_commit()})" if tool.name == "pollkit" else ""
        versions.append(f"{LABELS.get(tool.name, tool.name)} {tool.version}{commit}")
    if with_nginx:
        versions.append(f"nginx {nginx_version()}")
    return describe_machine(versions)


def write_readme(section: str) -> None:
    """Replace (or append) the section of benchmarks/README.md, keeping the others."""
    text = README.read_text()
    start = text.find(f"\n{SECTION}\n")
    if start == -1:
        README.write_text(f"{text.rstrip()}\n\n{section}")
        return
    following = re.compile(r"^## ", re.M).search(text, start + len(SECTION) + 2)
    rest = text[following.start() :] if following else ""
    README.write_text(f"{text[: start + 1]}{section}" + (f"\n{rest}" if rest else ""))


def _choices(value: str, known: Sequence[str]) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {','.join(known)}, got {value!r}")
    return [k for k in known if k in chosen]


def _server(name: str) -> AbstractContextManager[Server] | None:
    if name == "sim":
        return Simulator()
    if nginx_version() is None:
        print("nginx not installed (apt-get install nginx): skipping the nginx server")
        return None
    return Nginx()


_ABOUT = (
    "The same sets of files (MB = 10^6 bytes) fetched from one local server by each client in "
    "a child process of its own, 16 transfers at a time: `pollkit download --concurrency 16 "
    "--no-progress`, `curl --parallel --parallel-max 16`, `aria2c -j16 -x1`, and the SDK's "
    "`download_files_async` (one file at a time, each held whole in memory). Throughput is the "
    "set's bytes over the client's wall time, start-up included, median of {runs} runs "
    "(min–max); CPU is the client's user + system seconds (median); peak RSS the largest of its "
    "runs. Without start-up, each run's wall time less the tool's own start-up (below): what "
    "the engine does once running, as a library user calling it in a process sees it. "
    "Clients take turns run by run; every run's files are checked by sha256 against the "
    "source, and a client that failed once gets no figure. Targets for pollkit, judged both "
    "ways: ≥ aria2c on "
    "every set, ≥ 0.85× curl on 50 MB and 1 GB files, ≥ 0.6× curl on 1 MB files, and a peak "
    "RSS within 30 MB between the 1 MB and the 1 GB set."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per server, set and tool")
    for flag, known in (("--sets", list(SETS)), ("--servers", SERVERS), ("--tools", TOOLS)):
        parser.add_argument(
            flag,
            type=functools.partial(_choices, known=known),
            default=list(known),
            help=f"comma-separated, among {','.join(known)} (default: all)",
        )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per client run")
    parser.add_argument("--write-readme", action="store_true", help=f"replace {SECTION!r}")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "-m", "benchmarks.bench_download", *sys.argv[1:]])
    sets = [SETS[key] for key in args.sets]
    tools = find_tools(args.tools)
    if not tools:
        sys.exit("no client to measure")
    started = time.monotonic()
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    results: list[tuple[str, Cells]] = []
    with tempfile.TemporaryDirectory(prefix="bench_download-") as tmp:
        workdir = Path(tmp)
        # Sources (nginx) and one client's copy of the largest set, with room to spare.
        need = 2 * max(s.total for s in sets) + 10**9
        free = shutil.disk_usage(workdir).free
        if free < need:
            sys.exit(f"{free / 1e9:.1f} GB free in {workdir}, {need / 1e9:.1f} GB needed")
        # Python clients start as an installed package does, from cached bytecode: this kind
        # of machine sets PYTHONDONTWRITEBYTECODE and the checkout has no __pycache__, so
        # pollkit would compile itself at every start. The prefix keeps caches out of the tree.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        boot, starts = startup(tools, workdir)
        print(boot)
        for name in args.servers:
            server = _server(name)
            if server is None:
                continue
            with server as running:
                print(f"{running.title}:", flush=True)
                cells = bench_server(
                    running, sets, tools, runs=args.runs, timeout=args.timeout, workdir=workdir
                )
                results.append((running.title, cells))
    body = [
        f"### {title}\n\n" + "\n".join(table(cells, sets, tools, starts))
        for title, cells in results
    ]
    about = machine(tools, with_nginx="nginx" in args.servers and nginx_version() is not None)
    print(f"\n{about}\n{boot}\n\n" + "\n\n".join(body))
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(f"\n({time.monotonic() - started:.0f} s in all; load average at the end: {load})")
    if not args.write_readme:
        return
    if not results or "pollkit" not in {t.name for t in tools}:
        sys.exit(f"not writing {README}: pollkit was not measured")
    prose = [_ABOUT.format(runs=args.runs), f"{about} {boot}"]
    wrapped = [textwrap.fill(p, width=96, break_on_hyphens=False) for p in prose]
    section = "\n\n".join([SECTION, f"```sh\n{command}\n```", *wrapped, *body])
    write_readme(section + "\n")
    print(f"wrote {SECTION!r} in {README}")


if __name__ == "__main__":
    main()
