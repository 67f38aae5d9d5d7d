"""What the batch and scale benchmarks share: quantiles, process CPU, the machine line, README."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ["README", "machine", "process_cpu", "quantile", "wrap", "write_section"]

README = Path(__file__).with_name("README.md")


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `values`; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``), 0 if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkout_commit() -> str:
    """The checkout's commit, with ``+changes`` when pollkit/ differs from it."""
    root = Path(__file__).parent.parent

    def git(*args: str) -> str:
        reply = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return reply.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + ("+changes" if git("status", "--porcelain", "--", "pollkit") else "")


def describe_machine(versions: Sequence[str]) -> str:
    """Date, cores, CPU, kernel, then `versions` (after Python's), in one line."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    everything = [f"Python {platform.python_version()}", *versions]
    return (
        f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores "
        f"({model.group(1).strip() if model else platform.machine()}), "
        f"Linux {platform.release()}; {', '.join(everything)}."
    )


def machine(packages: Sequence[tuple[str, str]]) -> str:
    """`describe_machine` with the versions of `packages` (label, distribution)."""
    versions = []
    for label, distribution in packages:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        commit = f" ({checkout_commit()})" if distribution == "pollkit" else ""
        versions.append(f"{label} {version}{commit}")
    return describe_machine(versions)


def wrap(markdown: str, width: int = 100) -> str:
    """Fill the prose lines and bullets of `markdown` to `width`; headings, tables and code
    blocks stay as they are."""
    lines: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.strip() or line.startswith(("```", "#", "|")):
            lines.append(line)
        elif line.startswith("- "):
            lines.append(textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False))
        else:
            lines.append(textwrap.fill(line, width, break_on_hyphens=False))
    return "\n".join(lines) + "\n"


def write_section(title: str, section: str) -> None:
    """Replace the section of benchmarks/README.md headed `title` (or append it), keeping the
    others. `section` starts with that heading; its prose is wrapped at 100 columns."""
    section = wrap(section)
    text = README.read_text()
    start = text.find(f"\n{title}\n")
    if start == -1:
        README.write_text(f"{text.rstrip()}\n\n{section.rstrip()}\n")
        return
    following = re.compile(r"^## ", re.M).search(text, start + len(title) + 2)
    rest = text[following.start() :] if following else ""
    body = f"{text[: start + 1]}{section.rstrip()}\n"
    README.write_text(body + (f"\n{rest}" if rest else ""))
