"""The clients of the download benchmark, each run as a child process and measured alone.

A client's CPU time and peak RSS come from ``wait4`` on its own process (the rusage of that
child only), its wall time from around its spawn … ``wait4``; both are taken by a small
launcher (``dl_launch.py``, which says why) rather than by the benchmark process itself.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.dl_servers import Blob

__all__ = ["CONCURRENCY", "Measurement", "Tool", "find_tools", "measure"]

#: Transfers at a time, for every client that has the setting.
CONCURRENCY = 16

_SDK_CHILD = Path(__file__).with_name("dl_sdk.py")
_LAUNCHER = Path(__file__).with_name("dl_launch.py")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One finished (or killed) child process."""

    wall: float
    cpu: float
    max_rss: int  # bytes
    exit_code: int
    timed_out: bool
    stderr: str


def _child_env() -> dict[str, str]:
    # A developer's POLLKIT_* settings or a proxy must not change what is measured.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POLLKIT_") and not k.lower().endswith("_proxy")
    }


def measure(argv: Sequence[str], *, timeout: float) -> Measurement:
    """Run `argv` to completion (killed with its process group after `timeout` seconds).

    Args:
        argv: The command.
        timeout: Seconds before the client is killed.

    Returns:
        Wall seconds, CPU seconds (user + system) and peak RSS of that client alone.
    """
    launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), *argv]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            launcher,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_child_env(),
            start_new_session=True,
        )
        try:
            report, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher leads the client's group
            proc.communicate()
            return Measurement(
                wall=timeout, cpu=0.0, max_rss=0, exit_code=-9, timed_out=True, stderr=""
            )
        stderr.seek(0)
        message = stderr.read()[-2000:].decode(errors="replace").strip()
    fields = report.split()
    if len(fields) != 4:  # the launcher itself failed: no such command, say
        failed = proc.returncode or 1
        return Measurement(
            wall=0.0, cpu=0.0, max_rss=0, exit_code=failed, timed_out=False, stderr=message
        )
    wall, cpu, max_rss, exit_code = fields
    return Measurement(
        wall=float(wall),
        cpu=float(cpu),
        max_rss=int(max_rss) * 1024,
        exit_code=int(exit_code),
        timed_out=False,
        stderr=message,
    )


# A command builder writes whatever list or config file its tool reads into `workdir` and
# returns the argv that downloads `blobs` into `target`.
CommandBuilder = Callable[[Sequence[Blob], Path, Path], list[str]]


@dataclass(frozen=True, slots=True)
class Tool:
    """A download client: its name in tables, its version, and how to run it."""

    name: str
    version: str
    command: CommandBuilder


def _curl(blobs: Sequence[Blob], target: Path, workdir: Path) -> list[str]:
    config = workdir / "curl.conf"
    config.write_text("".join(f'url = "{b.url}"\noutput = "{target / b.name}"\n' for b in blobs))
    # -q first: no ~/.curlrc.
    parallel = ["--parallel", "--parallel-max", str(CONCURRENCY)]
    return ["curl", "-q", *parallel, "-s", "-K", str(config)]


def _aria2c(blobs: Sequence[Blob], target: Path, workdir: Path) -> list[str]:
    listing = workdir / "aria2c.txt"
    listing.write_text("".join(f"{b.url}\n  out={b.name}\n" for b in blobs))
    return [
        "aria2c",
        "--no-conf",
        f"-j{CONCURRENCY}",
        "-x1",
        "-q",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "-d",
        str(target),
        "-i",
        str(listing),
    ]


def _url_list(blobs: Sequence[Blob], workdir: Path) -> Path:
    listing = workdir / "urls.txt"
    listing.write_text("".join(f"{b.url}\n" for b in blobs))
    return listing


def _pollkit_argv() -> list[str]:
    script = Path(sys.executable).with_name("pollkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pollkit"]


def _pollkit(blobs: Sequence[Blob], target: Path, workdir: Path) -> list[str]:
    listing = _url_list(blobs, workdir)
    return [
        *_pollkit_argv(),
        "download",
        "-i",
        str(listing),
        "--dir",
        str(target),
        "--concurrency",
        str(CONCURRENCY),
        "--no-progress",
    ]


def _sdk(blobs: Sequence[Blob], target: Path, workdir: Path) -> list[str]:
    return [sys.executable, str(_SDK_CHILD), str(_url_list(blobs, workdir)), str(target)]


def _first_line(argv: list[str]) -> str:
    reply = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (reply.stdout or reply.stderr).splitlines()[0]


def _find(name: str) -> tuple[str, CommandBuilder] | str:
    """(version, command builder) of a tool, or why it cannot run."""
    if name == "curl":
        if shutil.which("curl") is None:
            return "curl not installed (apt-get install curl)"
        return _first_line(["curl", "--version"]).split()[1], _curl
    if name == "aria2c":
        if shutil.which("aria2c") is None:
            return "aria2c not installed (apt-get install aria2)"
        return _first_line(["aria2c", "--version"]).split()[-1], _aria2c
    if name == "pollkit":
        probe = subprocess.run(
            [*_pollkit_argv(), "download", "--help"], capture_output=True, check=False
        )
        if probe.returncode != 0:
            return "pollkit has no `download` command yet"
        return importlib.metadata.version("pollkit"), _pollkit
    if name == "sdk":
        if importlib.util.find_spec("magic_hour") is None:
            return "magic-hour SDK not installed (pip install magic-hour)"
        return importlib.metadata.version("magic-hour"), _sdk
    raise ValueError(f"unknown tool {name!r}")


def find_tools(names: Sequence[str]) -> list[Tool]:
    """The named tools that can run here; prints why each other one is skipped."""
    tools = []
    for name in names:
        found = _find(name)
        if isinstance(found, str):
            print(f"{found}: skipping {name}")
            continue
        version, command = found
        tools.append(Tool(name=name, version=version, command=command))
    return tools
